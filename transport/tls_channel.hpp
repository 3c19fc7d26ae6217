// TLS 1.3 (GnuTLS) over any Channel: a decorator whose TLS records travel as
// the inner channel's messages. The kernel here has no kTLS, so encryption
// runs in user space, in the calling thread.
//
// Wire: each outer send becomes one inner message holding the TLS records of
// [u32 magic "LMTP" | u32 length | the message's bytes]; the length is inside
// the encrypted stream, so message boundaries are authenticated too (the
// inner framing is not). Handshake records are inner messages of their own.
//
// The handshake runs lazily, on the first send() or recv(), under that call's
// timeout and stop token: a listener's accept() never waits for a peer's
// handshake, and a timed-out or stopped handshake resumes on the next call.
// Whichever thread (sender or receiver) comes first runs it; the other waits.
//
// Buffers: the message is encrypted into the decorator's own buffer during
// send(), which then owns the ciphertext until the inner channel completes it;
// the caller's pieces are complete when the inner send is (send_completed
// follows the inner channel). recv() decrypts into the decorator's buffer and
// returns a view of it, 8-aligned.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "transport/channel.hpp"

namespace lm::transport {

enum class TlsRole : uint8_t { client, server };

// Credentials loaded once and shared by every channel of a migration (GnuTLS
// credentials are read-only after setup, safe to share between threads).
class TlsConfig {
 public:
  // A pre-shared key (raw bytes, at least 16), identity "livemig"; TLS 1.3
  // ECDHE-PSK, so a later leak of the key does not reveal past traffic.
  static Result<std::shared_ptr<const TlsConfig>> psk(std::span<const std::byte> key);
  // X.509, mutual: DIR/ca.pem, DIR/cert.pem, DIR/key.pem. Each side presents
  // cert.pem and requires the peer's certificate to chain to ca.pem (the CA
  // of the migration network; host names are not checked).
  static Result<std::shared_ptr<const TlsConfig>> x509(const std::string& dir);

  ~TlsConfig();
  TlsConfig(const TlsConfig&) = delete;
  TlsConfig& operator=(const TlsConfig&) = delete;

  // "psk" or "x509 <dir>", for messages.
  const std::string& describe() const;

  struct Impl;  // GnuTLS handles; tls_channel.cpp
  const Impl& impl() const { return *impl_; }

 private:
  explicit TlsConfig(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The inner channel's max_message for a TLS channel of `max_message`: the
// records' headers and tags and the message prefix on top.
size_t tls_inner_max_message(size_t max_message);

// `inner` carries the records; the TLS channel's name is the inner one's
// prefixed with "tls ". Connecting sides are clients, accepting sides servers.
Result<std::unique_ptr<Channel>> tls_channel(std::unique_ptr<Channel> inner, std::shared_ptr<const TlsConfig> config,
                                             TlsRole role, const ChannelOptions& options);
// Wraps every accepted channel (role server); accept() does no TLS itself.
std::unique_ptr<Listener> tls_listener(std::unique_ptr<Listener> inner, std::shared_ptr<const TlsConfig> config,
                                       const ChannelOptions& options);

}  // namespace lm::transport

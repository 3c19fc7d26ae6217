#include "transport/tls_channel.hpp"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "transport/stream.hpp"

namespace lm::transport {

namespace {

constexpr uint32_t kPlainMagic = 0x50544d4c;  // "LMTP": the authenticated message prefix
constexpr size_t kRecordPlain = 16384;        // TLS's largest record payload
constexpr char kPskIdentity[] = "livemig";
// In-flight ciphertext buffers before send() waits for the oldest to complete
// (bounds memory when many small messages queue up in a uring channel).
constexpr size_t kMaxBuffersInFlight = 64;

// TLS 1.3 only; AES-GCM first (AES-NI), AES-128 before AES-256 (fewer rounds).
constexpr char kPriorityX509[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305";
constexpr char kPriorityPsk[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305";

std::string gnutls_text(int rc) { return strf("%s (GnuTLS %d)", gnutls_strerror(rc), rc); }

Timeout remaining(Deadline d) {
  if (d.at_ns == UINT64_MAX) return kForever;
  return Timeout((d.left_ns() + 999999) / 1000000);
}

}  // namespace

struct TlsConfig::Impl {
  std::string description;
  gnutls_priority_t priority = nullptr;
  gnutls_certificate_credentials_t x509 = nullptr;
  gnutls_psk_client_credentials_t psk_client = nullptr;
  gnutls_psk_server_credentials_t psk_server = nullptr;
  std::vector<unsigned char> psk_key;

  ~Impl() {
    if (priority) gnutls_priority_deinit(priority);
    if (x509) gnutls_certificate_free_credentials(x509);
    if (psk_client) gnutls_psk_free_client_credentials(psk_client);
    if (psk_server) gnutls_psk_free_server_credentials(psk_server);
  }
};

TlsConfig::TlsConfig(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsConfig::~TlsConfig() = default;
const std::string& TlsConfig::describe() const { return impl_->description; }

namespace {

Result<void> set_priority(TlsConfig::Impl& impl, const char* text) {
  const char* where = nullptr;
  int rc = gnutls_priority_init2(&impl.priority, text, &where, 0);
  if (rc != GNUTLS_E_SUCCESS)
    return Error::msg(strf("TLS priority '%s' (at '%s'): %s", text, where ? where : "", gnutls_text(rc).c_str()));
  return ok();
}

// The server's PSK lookup: the key comes from the channel (session pointer).
int psk_server_key(gnutls_session_t session, const char* username, gnutls_datum_t* key);

}  // namespace

Result<std::shared_ptr<const TlsConfig>> TlsConfig::psk(std::span<const std::byte> key) {
  if (key.size() < 16) return Error::msg(strf("TLS pre-shared key: %zu bytes, need at least 16", key.size()));
  auto impl = std::make_unique<Impl>();
  impl->description = "psk";
  impl->psk_key.resize(key.size());
  std::memcpy(impl->psk_key.data(), key.data(), key.size());
  LM_TRY(set_priority(*impl, kPriorityPsk));
  int rc = gnutls_psk_allocate_client_credentials(&impl->psk_client);
  if (rc == GNUTLS_E_SUCCESS) {
    gnutls_datum_t k{impl->psk_key.data(), unsigned(impl->psk_key.size())};
    rc = gnutls_psk_set_client_credentials(impl->psk_client, kPskIdentity, &k, GNUTLS_PSK_KEY_RAW);
  }
  if (rc == GNUTLS_E_SUCCESS) rc = gnutls_psk_allocate_server_credentials(&impl->psk_server);
  if (rc != GNUTLS_E_SUCCESS) return Error::msg("TLS PSK credentials: " + gnutls_text(rc));
  gnutls_psk_set_server_credentials_function(impl->psk_server, psk_server_key);
  return std::shared_ptr<const TlsConfig>(new TlsConfig(std::move(impl)));
}

Result<std::shared_ptr<const TlsConfig>> TlsConfig::x509(const std::string& dir) {
  auto impl = std::make_unique<Impl>();
  impl->description = "x509 " + dir;
  LM_TRY(set_priority(*impl, kPriorityX509));
  int rc = gnutls_certificate_allocate_credentials(&impl->x509);
  if (rc != GNUTLS_E_SUCCESS) return Error::msg("TLS certificate credentials: " + gnutls_text(rc));
  const std::string ca = dir + "/ca.pem", cert = dir + "/cert.pem", key = dir + "/key.pem";
  rc = gnutls_certificate_set_x509_trust_file(impl->x509, ca.c_str(), GNUTLS_X509_FMT_PEM);
  if (rc < 0) return Error::msg(strf("TLS CA certificate %s: %s", ca.c_str(), gnutls_text(rc).c_str()));
  if (rc == 0) return Error::msg(strf("TLS CA certificate %s: no certificate in the file", ca.c_str()));
  rc = gnutls_certificate_set_x509_key_file(impl->x509, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
  if (rc < 0)
    return Error::msg(strf("TLS certificate %s with key %s: %s", cert.c_str(), key.c_str(), gnutls_text(rc).c_str()));
  return std::shared_ptr<const TlsConfig>(new TlsConfig(std::move(impl)));
}

namespace {

class TlsChannel final : public Channel {
 public:
  TlsChannel(std::unique_ptr<Channel> inner, std::shared_ptr<const TlsConfig> config, TlsRole role,
             const ChannelOptions& options)
      : inner_(std::move(inner)), config_(std::move(config)), role_(role), max_message_(options.max_message),
        name_("tls " + inner_->name()) {}

  ~TlsChannel() override {
    if (session_) gnutls_deinit(session_);
  }

  // Separate from the constructor: GnuTLS calls can fail.
  Result<void> init() {
    const TlsConfig::Impl& c = config_->impl();
    unsigned flags = (role_ == TlsRole::client ? GNUTLS_CLIENT : GNUTLS_SERVER) | GNUTLS_NO_TICKETS;
    int rc = gnutls_init(&session_, flags);
    if (rc == GNUTLS_E_SUCCESS) rc = gnutls_priority_set(session_, c.priority);
    if (rc == GNUTLS_E_SUCCESS) {
      if (c.x509) {
        rc = gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, c.x509);
        if (role_ == TlsRole::server) gnutls_certificate_server_set_request(session_, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(session_, nullptr, 0);  // the CA only, no host name
      } else {
        rc = role_ == TlsRole::client ? gnutls_credentials_set(session_, GNUTLS_CRD_PSK, c.psk_client)
                                      : gnutls_credentials_set(session_, GNUTLS_CRD_PSK, c.psk_server);
      }
    }
    if (rc != GNUTLS_E_SUCCESS) return Error::msg(strf("%s: TLS session setup: %s", name_.c_str(), gnutls_text(rc).c_str()));
    gnutls_session_set_ptr(session_, this);
    gnutls_transport_set_ptr(session_, this);
    gnutls_transport_set_push_function(session_, &TlsChannel::push_cb);
    gnutls_transport_set_pull_function(session_, &TlsChannel::pull_cb);
    gnutls_transport_set_pull_timeout_function(session_, &TlsChannel::pull_timeout_cb);
    gnutls_handshake_set_timeout(session_, GNUTLS_INDEFINITE_TIMEOUT);  // ours: the call's deadline
    return ok();
  }

  const std::vector<unsigned char>& psk_key() const { return config_->impl().psk_key; }

  Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) override {
    size_t total = 0;
    for (const ConstBuffer& p : pieces) total += p.size;
    if (total > max_message_)
      return Error::sys(EMSGSIZE, strf("%s: message of %zu bytes exceeds the %zu-byte limit", name_.c_str(), total,
                                       max_message_));
    Deadline deadline = Deadline::after(timeout);
    LM_TRY(handshake(deadline, std::stop_token()));
    if (send_broken_) return *send_broken_;
    LM_TRY(reclaim_buffers(deadline));
    {
      std::lock_guard lock(out_mutex_);
      out_.reserve(total + 8 + (total / kRecordPlain + 2) * 32);
    }
    // Records of up to 16 KiB straight from the pieces; small pieces and the
    // boundaries between pieces are gathered in `chunk_` (one copy of those only).
    const uint32_t prefix[2] = {kPlainMagic, uint32_t(total)};
    chunk_len_ = 0;
    LM_TRY(put(prefix, sizeof prefix));
    for (const ConstBuffer& p : pieces) LM_TRY(put(p.data, p.size));
    LM_TRY(send_chunk());
    uint64_t seq = ++sent_;
    auto flushed = flush(deadline, seq);
    if (!flushed) {
      // The TLS stream advanced past a message the peer will never get.
      send_broken_ = Error{flushed.error().code, flushed.error().message +
                                                     " (an encrypted message was not queued: the TLS channel "
                                                     "cannot continue)"};
      return *send_broken_;
    }
    return seq;
  }

  uint64_t send_completed() override {
    uint64_t inner_done = inner_->send_completed();
    while (!in_flight_.empty() && in_flight_.front().inner_seq <= inner_done) {
      completed_ = std::max(completed_, in_flight_.front().outer_seq);
      spare_.push_back(std::move(in_flight_.front().bytes));
      in_flight_.pop_front();
    }
    if (in_flight_.empty()) completed_ = sent_;
    return completed_;
  }

  Result<void> wait_sent(uint64_t seq, Timeout timeout, std::stop_token stop) override {
    if (send_completed() >= seq) return ok();
    for (const InFlight& f : in_flight_)
      if (f.outer_seq >= seq) {
        LM_TRY(inner_->wait_sent(f.inner_seq, timeout, stop));
        break;
      }
    send_completed();
    return ok();
  }

  Result<Received> recv(Timeout timeout, std::stop_token stop) override {
    Deadline deadline = Deadline::after(timeout);
    LM_TRY(handshake(deadline, stop));
    if (recv_broken_) return *recv_broken_;
    pull_deadline_ = deadline;
    pull_stop_ = stop;
    // A wait that ended (timeout, stop) keeps what was read: the next recv goes on.
    while (plain_got_ < sizeof prefix_) {
      auto r = read_plain(reinterpret_cast<std::byte*>(prefix_) + plain_got_, sizeof prefix_ - plain_got_);
      if (!r) return std::move(r).error();
      if (*r == 0 && plain_got_ == 0) return Received{RecvStatus::closed, {}};
      if (*r == 0) return fail_recv(Error::msg(strf("%s: the peer ended TLS inside a message", name_.c_str())));
      plain_got_ += *r;
      if (plain_got_ < sizeof prefix_) continue;
      if (prefix_[0] != kPlainMagic || prefix_[1] > max_message_)
        return fail_recv(Error::msg(strf("%s: bad decrypted message prefix (magic %08x, length %u, limit %zu)",
                                         name_.c_str(), prefix_[0], prefix_[1], max_message_)));
      if (plain_.size() * 8 < prefix_[1]) plain_.resize((prefix_[1] + 7) / 8);
    }
    const size_t length = prefix_[1];
    std::byte* body = reinterpret_cast<std::byte*>(plain_.data());
    while (plain_got_ - sizeof prefix_ < length) {
      size_t have = plain_got_ - sizeof prefix_;
      auto r = read_plain(body + have, length - have);
      if (!r) return std::move(r).error();
      if (*r == 0) return fail_recv(Error::msg(strf("%s: the peer ended TLS inside a message", name_.c_str())));
      plain_got_ += *r;
    }
    plain_got_ = 0;
    return Received{RecvStatus::message, std::span<const std::byte>(body, length)};
  }

  Result<void> close(Timeout timeout) override {
    if (closed_) return ok();
    closed_ = true;
    Deadline deadline = Deadline::after(timeout);
    bool established;
    {
      std::lock_guard lock(hs_mutex_);
      established = hs_state_ == HsState::done;
    }
    if (established && !send_broken_) {
      int rc = gnutls_bye(session_, GNUTLS_SHUT_WR);  // close_notify: the end is authenticated
      if (rc == GNUTLS_E_SUCCESS) (void)flush(deadline, sent_);
    }
    return inner_->close(remaining(deadline));
  }

  const std::string& name() const override { return name_; }
  // Records and their headers count: they are what the link carries.
  std::optional<LinkCounters> link_counters() const override { return inner_->link_counters(); }
  void set_name(std::string name) override {
    inner_->set_name(name);
    name_ = "tls " + name;
  }

 private:
  enum class HsState : uint8_t { idle, running, done, failed };

  struct InFlight {
    uint64_t outer_seq;  // 0: handshake or close_notify records
    uint64_t inner_seq;
    std::vector<std::byte> bytes;
  };

  // --- handshake ---------------------------------------------------------------

  Result<void> handshake(Deadline deadline, std::stop_token stop) {
    std::unique_lock lock(hs_mutex_);
    while (hs_state_ == HsState::running) {
      // The other thread runs it; wait within this call's own deadline and token.
      auto not_running = [&] { return hs_state_ != HsState::running; };
      bool ended = deadline.at_ns == UINT64_MAX
                       ? hs_cv_.wait(lock, stop, not_running)
                       : hs_cv_.wait_for(lock, stop, std::chrono::nanoseconds(deadline.left_ns()), not_running);
      if (!ended) return stop.stop_requested() ? stopped_error(name_, "TLS handshake") : timeout_error(name_, "TLS handshake");
    }
    if (hs_state_ == HsState::done) return ok();
    if (hs_state_ == HsState::failed) return *hs_error_;
    hs_state_ = HsState::running;
    lock.unlock();
    auto r = run_handshake(deadline, stop);
    lock.lock();
    if (r) {
      hs_state_ = HsState::done;
    } else if (r.error().code == ETIMEDOUT || r.error().code == ECANCELED) {
      hs_state_ = HsState::idle;  // GnuTLS resumes where it stopped on the next call
    } else {
      hs_state_ = HsState::failed;
      hs_error_ = r.error();
    }
    hs_cv_.notify_all();
    return r;
  }

  Result<void> run_handshake(Deadline deadline, std::stop_token stop) {
    pull_deadline_ = deadline;
    pull_stop_ = std::move(stop);
    handshaking_ = true;
    struct Reset {
      bool& flag;
      ~Reset() { flag = false; }
    } reset{handshaking_};
    for (;;) {
      pull_error_.reset();
      int rc = gnutls_handshake(session_);
      if (rc == GNUTLS_E_SUCCESS) break;
      if ((rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) && !pull_error_) continue;
      if (pull_error_) return *pull_error_;  // the inner channel's own error (timeout, stop, peer gone)
      if (!gnutls_error_is_fatal(rc)) continue;
      std::string why = handshake_failure(rc);
      // Tell the peer (an alert), so its handshake fails at once, not by timeout.
      if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED && gnutls_alert_send_appropriate(session_, rc) == 0)
        (void)flush(deadline, 0);
      return Error::msg(why);
    }
    // The last flight, then wait for the handshake's sends: uring cancels a
    // thread's requests when it exits, and this may be the receiving thread.
    LM_TRY(flush(deadline, 0));
    if (!in_flight_.empty()) LM_TRY(inner_->wait_sent(in_flight_.back().inner_seq, remaining(deadline)));
    send_completed();
    return ok();
  }

  std::string handshake_failure(int rc) {
    std::string text = strf("%s: TLS handshake (%s, %s) failed: %s", name_.c_str(),
                            role_ == TlsRole::client ? "client" : "server", config_->describe().c_str(),
                            gnutls_text(rc).c_str());
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
      gnutls_datum_t out{};
      unsigned status = gnutls_session_get_verify_cert_status(session_);
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
        text += strf(": the peer's certificate: %s", reinterpret_cast<const char*>(out.data));
        gnutls_free(out.data);
      }
    } else if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
      const char* alert = gnutls_alert_get_name(gnutls_alert_get(session_));
      text += strf(": the peer refused with alert '%s'", alert ? alert : "?");
    }
    if (!config_->impl().psk_key.empty() &&
        (rc == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || rc == GNUTLS_E_DECRYPTION_FAILED ||
         rc == GNUTLS_E_FATAL_ALERT_RECEIVED)) {
      text += " (do both sides hold the same pre-shared key?)";
    } else if (rc == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || rc == GNUTLS_E_UNEXPECTED_PACKET ||
               rc == GNUTLS_E_UNSUPPORTED_VERSION_PACKET) {
      text += " (does the peer use TLS, --tls?)";
    }
    return text;
  }

  // --- send side ----------------------------------------------------------------

  Result<void> put(const void* data, size_t size) {
    auto p = static_cast<const std::byte*>(data);
    while (size > 0) {
      if (chunk_len_ == 0 && size >= kRecordPlain) {
        size_t n = LM_TRY(send_record(p, kRecordPlain));
        p += n;
        size -= n;
        continue;
      }
      size_t n = std::min(size, kRecordPlain - chunk_len_);
      std::memcpy(chunk_.data() + chunk_len_, p, n);
      chunk_len_ += n;
      p += n;
      size -= n;
      if (chunk_len_ == kRecordPlain) LM_TRY(send_chunk());
    }
    return ok();
  }

  Result<void> send_chunk() {
    while (chunk_len_ > 0) {
      size_t sent = LM_TRY(send_record(chunk_.data(), chunk_len_));
      std::memmove(chunk_.data(), chunk_.data() + sent, chunk_len_ - sent);
      chunk_len_ -= sent;
    }
    return ok();
  }

  // Encrypts one record into out_ (through push_cb); how much it took.
  Result<size_t> send_record(const void* data, size_t size) {
    for (;;) {
      ssize_t rc = gnutls_record_send(session_, data, size);
      if (rc >= 0) return size_t(rc);
      if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) continue;
      send_broken_ = Error::msg(strf("%s: TLS encrypt: %s", name_.c_str(), gnutls_text(int(rc)).c_str()));
      return *send_broken_;
    }
  }

  // Waits for the oldest ciphertext buffers when too many are in flight.
  Result<void> reclaim_buffers(Deadline deadline) {
    send_completed();
    if (in_flight_.size() < kMaxBuffersInFlight) return ok();
    LM_TRY(inner_->wait_sent(in_flight_[in_flight_.size() - kMaxBuffersInFlight / 2].inner_seq, remaining(deadline)));
    send_completed();
    return ok();
  }

  // Sends the ciphertext gathered in out_ as one inner message.
  Result<void> flush(Deadline deadline, uint64_t outer_seq) {
    std::vector<std::byte> bytes;
    {
      std::lock_guard lock(out_mutex_);
      if (out_.empty()) return ok();
      bytes.swap(out_);
      if (!spare_.empty()) {
        out_ = std::move(spare_.back());
        spare_.pop_back();
        out_.clear();
      }
    }
    ConstBuffer piece{bytes.data(), bytes.size()};
    uint64_t inner_seq = LM_TRY(inner_->send(std::span(&piece, 1), remaining(deadline)));
    in_flight_.push_back({outer_seq, inner_seq, std::move(bytes)});
    return ok();
  }

  static ssize_t push_cb(gnutls_transport_ptr_t self, const void* data, size_t size) {
    auto* c = static_cast<TlsChannel*>(self);
    // Under a lock: a TLS 1.3 key update answered from the receiving thread
    // would push while the sender encrypts (it leaves with the next send).
    std::lock_guard lock(c->out_mutex_);
    auto p = static_cast<const std::byte*>(data);
    c->out_.insert(c->out_.end(), p, p + size);
    return ssize_t(size);
  }

  // --- receive side ---------------------------------------------------------------

  // Up to `size` plaintext bytes; 0 at the peer's close_notify.
  Result<size_t> read_plain(std::byte* dst, size_t size) {
    for (;;) {
      pull_error_.reset();
      ssize_t rc = gnutls_record_recv(session_, dst, size);
      if (rc >= 0) return size_t(rc);
      if (pull_error_) {
        if (pull_error_->code == ETIMEDOUT || pull_error_->code == ECANCELED) return *pull_error_;
        return fail_recv(*pull_error_);
      }
      if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) continue;
      if (!gnutls_error_is_fatal(int(rc))) continue;
      if (rc == GNUTLS_E_PREMATURE_TERMINATION)
        return fail_recv(Error::msg(strf("%s: the peer closed the channel without a TLS close_notify (truncated?)",
                                         name_.c_str())));
      return fail_recv(Error::msg(strf("%s: TLS receive: %s", name_.c_str(), gnutls_text(int(rc)).c_str())));
    }
  }

  Error fail_recv(Error e) {
    recv_broken_ = e;
    return e;
  }

  static ssize_t pull_cb(gnutls_transport_ptr_t self, void* dst, size_t size) {
    auto* c = static_cast<TlsChannel*>(self);
    if (c->handshaking_) {
      // Our flight leaves before we wait for the peer's.
      if (auto f = c->flush(c->pull_deadline_, 0); !f) return c->pull_failed(std::move(f).error());
    }
    while (c->in_offset_ == c->in_.size()) {
      if (c->inner_closed_) return 0;
      auto r = c->inner_->recv(remaining(c->pull_deadline_), c->pull_stop_);
      if (!r) return c->pull_failed(std::move(r).error());
      if (r->status == RecvStatus::closed) {
        c->inner_closed_ = true;
        return 0;
      }
      c->in_ = r->bytes;
      c->in_offset_ = 0;
    }
    size_t n = std::min(size, c->in_.size() - c->in_offset_);
    std::memcpy(dst, c->in_.data() + c->in_offset_, n);
    c->in_offset_ += n;
    return ssize_t(n);
  }

  // The inner error is kept for the caller; GnuTLS sees EAGAIN for a wait
  // that may go on later (timeout, stop), EIO for the rest.
  ssize_t pull_failed(Error e) {
    bool again = e.code == ETIMEDOUT || e.code == ECANCELED;
    pull_error_ = std::move(e);
    gnutls_transport_set_errno(session_, again ? EAGAIN : EIO);
    return -1;
  }

  // GnuTLS asks before some reads; the real wait is in pull_cb (with the deadline).
  static int pull_timeout_cb(gnutls_transport_ptr_t, unsigned) { return 1; }

  std::unique_ptr<Channel> inner_;
  std::shared_ptr<const TlsConfig> config_;
  TlsRole role_;
  size_t max_message_;
  std::string name_;
  gnutls_session_t session_ = nullptr;
  bool closed_ = false;

  // Handshake: guarded by hs_mutex_; the running thread alone touches the rest.
  std::mutex hs_mutex_;
  std::condition_variable_any hs_cv_;
  HsState hs_state_ = HsState::idle;
  std::optional<Error> hs_error_;
  bool handshaking_ = false;

  // Pull context: the thread inside gnutls_handshake or gnutls_record_recv.
  Deadline pull_deadline_;
  std::stop_token pull_stop_;
  std::optional<Error> pull_error_;
  std::span<const std::byte> in_;  // the inner message being decrypted
  size_t in_offset_ = 0;
  bool inner_closed_ = false;

  // Receive side.
  uint32_t prefix_[2] = {};
  size_t plain_got_ = 0;         // prefix + body bytes of the current message
  std::vector<uint64_t> plain_;  // 8-aligned plaintext of the current message
  std::optional<Error> recv_broken_;

  // Send side (the sending thread; out_ also from push_cb under out_mutex_).
  std::mutex out_mutex_;
  std::vector<std::byte> out_;
  std::vector<std::byte> chunk_ = std::vector<std::byte>(kRecordPlain);
  size_t chunk_len_ = 0;
  std::deque<InFlight> in_flight_;
  std::vector<std::vector<std::byte>> spare_;
  uint64_t sent_ = 0, completed_ = 0;
  std::optional<Error> send_broken_;
};

int psk_server_key(gnutls_session_t session, const char* username, gnutls_datum_t* key) {
  if (std::strcmp(username, kPskIdentity) != 0) return -1;
  const auto& k = static_cast<TlsChannel*>(gnutls_session_get_ptr(session))->psk_key();
  key->data = static_cast<unsigned char*>(gnutls_malloc(k.size()));
  if (!key->data) return -1;
  std::memcpy(key->data, k.data(), k.size());
  key->size = unsigned(k.size());
  return 0;
}

class TlsListener final : public Listener {
 public:
  TlsListener(std::unique_ptr<Listener> inner, std::shared_ptr<const TlsConfig> config, const ChannelOptions& options)
      : inner_(std::move(inner)), config_(std::move(config)), options_(options) {}

  Result<std::unique_ptr<Channel>> accept(Timeout timeout, std::stop_token stop) override {
    auto ch = LM_TRY(inner_->accept(timeout, std::move(stop)));
    return tls_channel(std::move(ch), config_, TlsRole::server, options_);
  }
  std::string address() const override { return inner_->address(); }

 private:
  std::unique_ptr<Listener> inner_;
  std::shared_ptr<const TlsConfig> config_;
  ChannelOptions options_;
};

}  // namespace

size_t tls_inner_max_message(size_t max_message) {
  constexpr size_t kRecordOverhead = 64;  // header 5, tag 16, content type 1; generous for padding
  return max_message + 8 + (max_message / kRecordPlain + 2) * kRecordOverhead;
}

Result<std::unique_ptr<Channel>> tls_channel(std::unique_ptr<Channel> inner, std::shared_ptr<const TlsConfig> config,
                                             TlsRole role, const ChannelOptions& options) {
  auto c = std::make_unique<TlsChannel>(std::move(inner), std::move(config), role, options);
  LM_TRY(c->init());
  return std::unique_ptr<Channel>(std::move(c));
}

std::unique_ptr<Listener> tls_listener(std::unique_ptr<Listener> inner, std::shared_ptr<const TlsConfig> config,
                                       const ChannelOptions& options) {
  return std::make_unique<TlsListener>(std::move(inner), std::move(config), options);
}

}  // namespace lm::transport

// Pre-shared key files: the key that authenticates a session's handshake
// (transport/session.cpp) and, with --tls, its TLS-PSK. One small reader, so
// every command checks a key file the same way. The key is never printed.
#pragma once

#include <string>
#include <string_view>

#include "common/error.hpp"

namespace lm {

inline constexpr size_t kMinKeyBytes = 16;
inline constexpr size_t kMaxKeyBytes = 4096;

// The key in `path`: a regular file of kMinKeyBytes..kMaxKeyBytes bytes (one
// trailing newline is not part of the key) that neither group nor others may
// access. Errors name the file and, for the permissions, its mode.
Result<std::string> read_key_file(const std::string& path);

// Writes a fresh random key (32 random bytes as 64 hex digits) to a new file
// `path` with mode 0600; fails if it exists.
Result<void> write_random_key_file(const std::string& path);

// A key of its own for one use of a pre-shared key: HMAC-SHA256(key, label),
// 32 bytes, so no two uses (the handshake's MAC, TLS-PSK) share key material.
std::string derive_key(std::string_view key, std::string_view label);
// Overwrites a key's bytes before it is freed.
void wipe_key(std::string& key);

}  // namespace lm

// Pre-shared key files: the key that authenticates a session's handshake
// (transport/session.cpp) and, with --tls, its TLS-PSK. One small reader, so
// every command checks a key file the same way. The key is never printed.
#pragma once

#include <string>

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

}  // namespace lm

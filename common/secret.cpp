#include "common/secret.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fd.hpp"

namespace lm {

Result<std::string> read_key_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return Error::from_errno(strf("open key file %s", path.c_str()));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::from_errno(strf("stat key file %s", path.c_str()));
  if (!S_ISREG(st.st_mode)) return Error::msg(strf("key file %s is not a regular file", path.c_str()));
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return Error{EACCES, strf("key file %s is accessible by group or others (mode %04o); chmod 600 %s",
                              path.c_str(), unsigned(st.st_mode & 07777), path.c_str())};
  if (st.st_size > off_t(kMaxKeyBytes))
    return Error::msg(strf("key file %s has %lld bytes, more than a key (at most %zu)", path.c_str(),
                           (long long)st.st_size, kMaxKeyBytes));
  std::string key(size_t(st.st_size), '\0');
  size_t got = 0;
  while (got < key.size()) {
    ssize_t n = ::read(fd.get(), key.data() + got, key.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno(strf("read key file %s", path.c_str()));
    if (n == 0) break;
    got += size_t(n);
  }
  key.resize(got);
  if (!key.empty() && key.back() == '\n') key.pop_back();
  if (key.size() < kMinKeyBytes) {
    sodium_memzero(key.data(), key.size());
    return Error::msg(strf("key file %s holds a %zu-byte key; at least %zu bytes are needed", path.c_str(),
                           key.size(), kMinKeyBytes));
  }
  return key;
}

Result<void> write_random_key_file(const std::string& path) {
  if (sodium_init() < 0) return Error::msg("libsodium failed to initialise");
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  char hex[2 * sizeof raw + 1];
  sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
  sodium_memzero(raw, sizeof raw);
  hex[2 * sizeof raw] = '\n';
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::from_errno(strf("create key file %s", path.c_str()));
  ssize_t n = ::write(fd.get(), hex, sizeof hex);
  sodium_memzero(hex, sizeof hex);
  if (n != ssize_t(sizeof hex)) return Error::from_errno(strf("write key file %s", path.c_str()));
  return ok();
}

std::string derive_key(std::string_view key, std::string_view label) {
  auto bytes = [](std::string_view v) { return reinterpret_cast<const unsigned char*>(v.data()); };
  std::string derived(crypto_auth_hmacsha256_BYTES, '\0');
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, bytes(key), key.size());
  crypto_auth_hmacsha256_update(&st, bytes(label), label.size());
  crypto_auth_hmacsha256_final(&st, reinterpret_cast<unsigned char*>(derived.data()));
  sodium_memzero(&st, sizeof st);
  return derived;
}

void wipe_key(std::string& key) { sodium_memzero(key.data(), key.size()); }

}  // namespace lm

// An unmodified real workload: redis-server (Debian's package) on loopback,
// loaded with redis-benchmark and kept busy with writes while it migrates.
// Every process it starts is its own child, ended by pidfd in stop(), and
// killed by the kernel if the thread that started it dies first.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/error.hpp"
#include "common/subprocess.hpp"

namespace lm::engine {

struct RedisOptions {
  uint64_t keys = 100000;
  uint64_t value_bytes = 512;
  unsigned clients = 4;
};

class RedisWorkload {
 public:
  // Starts redis-server on a free loopback port and loads `keys` keys.
  static Result<RedisWorkload> start(const RedisOptions& options);
  RedisWorkload(RedisWorkload&& o) noexcept = default;
  RedisWorkload& operator=(RedisWorkload&&) = delete;
  ~RedisWorkload();

  // Starts redis-benchmark writing random keys until stop().
  Result<void> start_writers();
  // Commands processed per second over `window_ms` (redis INFO).
  Result<double> ops_per_second(unsigned window_ms);
  Result<uint64_t> commands_processed();
  // One inline command ("DBSIZE", "SET k v") on a fresh connection; the
  // reply's text (simple, integer or bulk replies; arrays are not read whole).
  Result<std::string> request(const std::string& inline_command, int timeout_ms = 2000);

  pid_t server_pid() const { return server_.pid(); }
  uint16_t port() const { return port_; }
  // Ends every process started (writers first), by pidfd, and reaps them.
  void stop();

 private:
  RedisWorkload() = default;
  RedisOptions options_;
  Subprocess server_;
  Subprocess writers_;
  uint16_t port_ = 0;
};

}  // namespace lm::engine

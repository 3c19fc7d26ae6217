// Client side of the synthetic guest: its control socket, spawning it, and
// reading its write log. Linked by tests and the migration engine through
// guest_client_dep. Tests find the binary in the environment variable
// LM_GUEST_BIN (see docs/guest.md).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"
#include "common/fd.hpp"
#include "common/subprocess.hpp"

namespace lm::guest {

struct GuestStatus {
  pid_t pid = -1;
  uint64_t ram_addr = 0;
  uint64_t ram_size = 0;
  uint64_t steps = 0;        // completed steps of all writers (kept in RAM: survives a resume)
  double steps_per_s = 0;    // over about the last second
  uint64_t epoch = 0;        // current write-log epoch
  unsigned threads = 0;
};

// "ok a=1 b=0x2" -> {a: "1", b: "0x2"} (the leading ok/error word is skipped).
std::map<std::string, std::string, std::less<>> parse_reply_fields(std::string_view reply);

class ControlClient {
 public:
  // Connects to the guest's control socket, retrying until it exists.
  static Result<ControlClient> connect(const std::string& path, int timeout_ms);

  // Sends one request line and returns the reply line (without newline).
  // A reply starting with "error" becomes an Error carrying the whole reply.
  Result<std::string> request(std::string_view line, int timeout_ms = 60000);
  Result<GuestStatus> status();
  // Closes the current write-log epoch; returns the new epoch number.
  Result<uint64_t> next_epoch();
  // Checks every data page against the version table; returns the page count.
  Result<uint64_t> verify();
  Result<void> pause();
  Result<void> resume();
  // Asks the guest to exit (it replies before exiting).
  Result<void> quit();

  const std::string& path() const { return path_; }

 private:
  ControlClient() = default;
  std::string path_;
  UniqueFd fd_;
  std::string buffer_;
};

// One closed epoch of a guest's --write-log: the page addresses written in it.
struct WriteLogEpoch {
  uint64_t epoch = 0;
  std::vector<uint64_t> pages;
  std::vector<PageRange> unmapped;  // mappings unmapped or moved away in this epoch (--churn)
};
Result<std::vector<WriteLogEpoch>> read_write_log(const std::string& path);

struct GuestOptions {
  uint64_t ram_bytes = 64ull << 20;
  std::string rate = "1000";        // pages/s or "max"
  std::string pattern = "uniform";
  std::string content = "mixed";
  std::string write = "page";
  unsigned threads = 1;
  uint64_t seed = 1;
  bool churn = false;
  bool prefill = false;             // every data page written once before READY
  std::string write_log;            // empty: none
  std::vector<std::string> extra_args;
};

// What a guest does when the thread that started it exits (a test or a
// `livemig run` killed midway must not leave a guest writing at full speed).
using lm::ParentExit;

// A livemig-guest child process. Owns it: the destructor kills it by its
// pidfd (SIGKILL) and reaps it unless stop() already did.
class GuestProcess {
 public:
  // Starts a fresh guest with a control socket in work_dir and waits (10 s at
  // most) for its READY line. It dies with the calling thread.
  static Result<GuestProcess> spawn(const std::string& guest_binary, const GuestOptions& opts,
                                    const std::string& work_dir);
  // Starts `livemig-guest --resume --handoff handoff_path` with a control
  // socket in work_dir, without waiting: the guest prints READY only after the
  // engine's go(). Call wait_ready() then. It outlives the calling thread
  // (a destination thread ends before its guest); it exits if its engine
  // hangs up before releasing it.
  static Result<GuestProcess> spawn_resume(const std::string& guest_binary, const std::string& handoff_path,
                                           const std::string& work_dir);
  // Starts guest_binary with exactly these arguments (stdout captured).
  static Result<GuestProcess> launch(const std::string& guest_binary, const std::vector<std::string>& args,
                                    ParentExit on_parent_exit = ParentExit::keep_running);

  // Reads the READY line and connects the control client.
  Result<void> wait_ready(int timeout_ms);

  pid_t pid() const { return child_.running() ? child_.pid() : -1; }  // -1 once reaped
  ControlClient& control() { return *control_; }
  uint64_t ram_addr() const { return ram_addr_; }
  uint64_t ram_size() const { return ram_size_; }
  const std::string& control_path() const { return control_path_; }

  // Asks the guest to quit over the control socket (SIGTERM if that fails),
  // waits up to timeout_ms, then SIGKILLs. Returns the exit status (or
  // 128 + signal), or an error when it had to be killed.
  Result<int> stop(int timeout_ms);
  // Waits up to timeout_ms for the child to exit on its own; returns as stop().
  Result<int> wait_exit(int timeout_ms);

  GuestProcess(GuestProcess&& o) noexcept = default;
  GuestProcess& operator=(GuestProcess&& o) noexcept = default;  // kills the guest it held first
  ~GuestProcess();

 private:
  GuestProcess() = default;
  void kill_and_reap();
  Subprocess child_;
  UniqueFd stdout_;
  std::string stdout_buf_;
  uint64_t ram_addr_ = 0;
  uint64_t ram_size_ = 0;
  std::string control_path_;
  std::unique_ptr<ControlClient> control_;
};

// What a wait_exit()/stop() status says: "guest pid N exited with status S"
// or "guest pid N was killed by SIGKILL" (status 128 + signal).
std::string guest_exit_text(pid_t pid, int status);

// Returns LM_GUEST_BIN, or an error saying that the test must set it.
Result<std::string> guest_binary_from_env();

}  // namespace lm::guest

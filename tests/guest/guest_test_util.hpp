// Helpers for the guest tests: a scratch directory, the guest binary, and
// reading/writing a live guest's RAM from outside (process_vm_readv/writev).
#pragma once

#include <gtest/gtest.h>
#include <sys/uio.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "harness/guest/client.hpp"
#include "harness/guest/layout.hpp"

namespace lm::guest::test {

#define ASSERT_OK(expr)                                        \
  ({                                                           \
    auto lm_assert_result_ = (expr);                           \
    ASSERT_TRUE(lm_assert_result_.ok()) << lm_assert_result_.error().message; \
    std::move(lm_assert_result_).value();                      \
  })

// A fresh directory under /tmp, removed with its contents at the end.
class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/lm-guest-XXXXXX";
    path_ = ::mkdtemp(tmpl) ? tmpl : "/tmp";
  }
  ~ScratchDir() {
    std::error_code ec;
    if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string guest_binary() {
  auto bin = guest_binary_from_env();
  if (!bin) {
    ADD_FAILURE() << bin.error().message;
    return "/nonexistent";
  }
  return *bin;
}

inline GuestOptions options(uint64_t ram_bytes, std::string rate, unsigned threads = 1) {
  GuestOptions o;
  o.ram_bytes = ram_bytes;
  o.rate = std::move(rate);
  o.threads = threads;
  return o;
}

inline Result<void> read_remote(pid_t pid, uint64_t addr, void* buf, size_t len) {
  iovec local{buf, len}, remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n != ssize_t(len))
    return Error::from_errno(strf("process_vm_readv pid %d addr 0x%lx len %zu", pid, (unsigned long)addr, len));
  return ok();
}

inline Result<void> write_remote(pid_t pid, uint64_t addr, const void* buf, size_t len) {
  iovec local{const_cast<void*>(buf), len}, remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = ::process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (n != ssize_t(len))
    return Error::from_errno(strf("process_vm_writev pid %d addr 0x%lx len %zu", pid, (unsigned long)addr, len));
  return ok();
}

// A copy of a guest's whole RAM region, viewed through the layout.
struct RamCopy {
  std::vector<uint8_t> bytes;
  RamView view;
};

inline Result<RamCopy> copy_ram(pid_t pid, uint64_t addr, uint64_t size) {
  RamCopy c;
  c.bytes.resize(size);
  LM_TRY(read_remote(pid, addr, c.bytes.data(), size));
  c.view = LM_TRY(RamView::attach(c.bytes.data(), addr, size));
  return c;
}

}  // namespace lm::guest::test

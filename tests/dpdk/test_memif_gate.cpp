// The gate between memif bursts and the memif PMD unmapping a vanished
// peer's rings on the EAL's interrupt thread (transport/dpdk/eth_port.cpp).
// No EAL needed: the gate is the process's munmap and a lock.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "transport/dpdk/eth_port.hpp"

namespace {

// DPDK's libraries find munmap in the global scope: it must be the gate's.
TEST(MemifUnmapGate, TheProcessesMunmapIsTheGate) {
  void* found = dlsym(RTLD_DEFAULT, "munmap");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found, reinterpret_cast<void*>(&::munmap)) << "munmap resolves to libc's, not the gate";
}

// An munmap on the interrupt thread waits while a burst holds the gate, and
// turns new bursts away meanwhile; on any other thread it does not wait.
TEST(MemifUnmapGate, TheInterruptThreadsUnmapWaitsForABurst) {
  auto unmap_on = [](const char* thread_name, std::atomic<bool>& done, int& rc) {
    return std::thread([thread_name, &done, &rc] {
      prctl(PR_SET_NAME, thread_name);
      void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      rc = page == MAP_FAILED ? -2 : munmap(page, 4096);
      done = true;
    });
  };
  std::atomic<bool> other_done{false}, intr_done{false};
  int other_rc = -1, intr_rc = -1;
  {
    auto burst = lm::dpdk::hold_memif_burst_gate();
    std::thread other = unmap_on("lm-other", other_done, other_rc);
    std::thread intr = unmap_on("eal-intr-thread", intr_done, intr_rc);
    other.join();
    EXPECT_TRUE(other_done);
    EXPECT_EQ(other_rc, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_FALSE(intr_done) << "the interrupt thread unmapped during a burst";
    EXPECT_FALSE(lm::dpdk::hold_memif_burst_gate().owns_lock()) << "a new burst must not go ahead of a waiting unmap";
    burst.unlock();
    intr.join();
  }
  EXPECT_TRUE(intr_done);
  EXPECT_EQ(intr_rc, 0);
  EXPECT_TRUE(lm::dpdk::hold_memif_burst_gate().owns_lock()) << "bursts go on once the unmap is done";
}

}  // namespace

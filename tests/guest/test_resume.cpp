// Resume: freeze a running guest at random moments, hand its RAM image to a
// resumed guest through the handoff (the test plays the engine), and check
// that the resumed guest verifies and keeps stepping from where it stopped.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <atomic>
#include <optional>
#include <fstream>
#include <random>
#include <thread>

#include "common/clock.hpp"
#include "guest_test_util.hpp"
#include "harness/guest/handoff.hpp"

namespace lm::guest::test {
namespace {

using namespace std::chrono_literals;

char task_state(const std::string& stat_path) {
  std::ifstream f(stat_path);
  std::string stat((std::istreambuf_iterator<char>(f)), {});
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
}

// Waits until every thread of pid is stopped (state T): a group stop reaches
// the threads one by one, and the image must not be copied before.
bool wait_stopped(pid_t pid) {
  for (int i = 0; i < 2000; i++) {
    bool all = true;
    for (const auto& task : std::filesystem::directory_iterator(strf("/proc/%d/task", pid)))
      all &= task_state(task.path().string() + "/stat") == 'T';
    if (all) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

struct MappedMemfd {
  void* base = MAP_FAILED;
  size_t size = 0;
  MappedMemfd(int fd, size_t len) : size(len) {
    base = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  ~MappedMemfd() {
    if (base != MAP_FAILED) ::munmap(base, size);
  }
};

// Serves the resumed guest's MINOR faults (the memfd already holds every
// page) until stopped; counts them.
class MinorFaultServer {
 public:
  explicit MinorFaultServer(int uffd) : uffd_(uffd), thread_([this] { run(); }) {}
  ~MinorFaultServer() {
    stop_ = true;
    thread_.join();
  }
  uint64_t faults() const { return faults_; }
  std::string error() const { return error_; }

 private:
  void run() {
    while (!stop_) {
      pollfd p{uffd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      uffd_msg msg;
      if (::read(uffd_, &msg, sizeof msg) != sizeof msg) continue;
      if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
      uffdio_continue c{};
      c.range.start = msg.arg.pagefault.address & ~uint64_t(kPageSize - 1);
      c.range.len = kPageSize;
      if (!(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)) {
        error_ = strf("unexpected MISSING fault at 0x%llx", msg.arg.pagefault.address);
        continue;
      }
      if (::ioctl(uffd_, UFFDIO_CONTINUE, &c) != 0 && errno != EEXIST)
        error_ = strf("UFFDIO_CONTINUE 0x%llx: %s", c.range.start, std::strerror(errno));
      faults_++;
    }
  }
  int uffd_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> faults_{0};
  std::string error_;
  std::thread thread_;
};

// A guest resumed by the test playing the engine, with what keeps it running.
struct Resumed {
  std::optional<HandoffServer> server;  // the guest exits if it closes before release()
  std::optional<GuestProcess> guest;
  GuestRam ram;
  std::unique_ptr<MinorFaultServer> faults;  // with a userfaultfd
  uint64_t data_pages = 0;
};

// Plays the engine: hands the frozen source's RAM to a resumed guest and
// checks that it verifies and runs on from the same state.
void resume_frozen(GuestProcess& source, const ScratchDir& dir, const std::string& tag, UffdWanted uffd,
                   Resumed& out) {
  std::string handoff_path = dir.file("handoff-" + tag + ".sock");
  out.server.emplace(ASSERT_OK(HandoffServer::listen(handoff_path)));
  HandoffServer& server = *out.server;
  out.guest.emplace(ASSERT_OK(GuestProcess::spawn_resume(guest_binary(), handoff_path, dir.path())));
  GuestProcess& dest = *out.guest;
  out.ram = ASSERT_OK(server.accept(source.ram_addr(), source.ram_size(), uffd, 10000));
  EXPECT_EQ(out.ram.pid, dest.pid());
  MappedMemfd image(out.ram.memfd.get(), source.ram_size());
  ASSERT_NE(image.base, MAP_FAILED);
  ASSERT_OK(read_remote(source.pid(), source.ram_addr(), image.base, source.ram_size()));
  RamView view = ASSERT_OK(RamView::attach(image.base, source.ram_addr(), source.ram_size()));
  // A frozen image may hold each writer's step in progress half-done.
  ASSERT_OK(verify_ram(view, PendingPages::tolerate));
  uint64_t frozen_steps = view.total_steps();
  out.data_pages = view.data_pages();

  if (uffd == UffdWanted::yes) {
    ASSERT_TRUE(out.ram.uffd.valid());
    ASSERT_TRUE(out.ram.minor_registered) << "this kernel has UFFD_FEATURE_MINOR_SHMEM";
    out.faults = std::make_unique<MinorFaultServer>(out.ram.uffd.get());
  }
  uint64_t go_ns = now_ns();
  ASSERT_OK(server.go());
  uint64_t resumed_ns = ASSERT_OK(server.wait_running(10000));
  EXPECT_GE(resumed_ns, go_ns);
  ASSERT_OK(dest.wait_ready(10000));
  EXPECT_EQ(dest.ram_addr(), source.ram_addr());
  GuestStatus first = ASSERT_OK(dest.control().status());
  EXPECT_GE(first.steps, frozen_steps);
  EXPECT_EQ(first.pid, dest.pid());
  EXPECT_EQ(ASSERT_OK(dest.control().verify()), out.data_pages);
  std::this_thread::sleep_for(100ms);
  GuestStatus later = ASSERT_OK(dest.control().status());
  EXPECT_GT(later.steps, first.steps + 10);
  EXPECT_EQ(ASSERT_OK(dest.control().verify()), out.data_pages);
  if (out.faults) {
    EXPECT_GT(out.faults->faults(), 0u);
    EXPECT_EQ(out.faults->error(), "");
  }
}

void freeze(GuestProcess& g) {
  ASSERT_EQ(::kill(g.pid(), SIGSTOP), 0);
  ASSERT_TRUE(wait_stopped(g.pid()));
}

void migrate_frozen(GuestProcess& source, const ScratchDir& dir, int round, UffdWanted uffd) {
  Resumed r;
  resume_frozen(source, dir, std::to_string(round), uffd, r);
  if (::testing::Test::HasFatalFailure()) return;
  ASSERT_OK(r.server->release());
  r.server.reset();
  EXPECT_EQ(ASSERT_OK(r.guest->stop(5000)), 0) << "a released guest runs on without its engine";
}

class GuestResume : public ::testing::TestWithParam<const char*> {};

TEST_P(GuestResume, FrozenAtRandomMomentsResumesAndVerifies) {
  std::random_device rd;
  unsigned seed = rd();
  std::mt19937 rng(seed);
  SCOPED_TRACE(strf("random seed %u", seed));
  ScratchDir dir;
  GuestOptions o = options(4 << 20, "max", 2);
  o.write = GetParam();
  o.content = "mixed";
  o.pattern = "hotspot:0.1:0.8";
  GuestProcess source = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  for (int round = 0; round < 4; round++) {
    std::this_thread::sleep_for(std::chrono::microseconds(20000 + rng() % 180000));
    freeze(source);
    migrate_frozen(source, dir, round, UffdWanted::no);
    if (HasFatalFailure()) return;
    ASSERT_EQ(::kill(source.pid(), SIGCONT), 0);
  }
  ASSERT_OK(source.control().verify());
  EXPECT_EQ(ASSERT_OK(source.stop(5000)), 0);
}

INSTANTIATE_TEST_SUITE_P(WriteModes, GuestResume, ::testing::Values("page", "word"),
                         [](const auto& info) { return std::string(info.param); });

TEST(GuestResumeUffd, MinorFaultsServedFromMemfd) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "20000");
  GuestProcess source = ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path()));
  std::this_thread::sleep_for(100ms);
  freeze(source);
  migrate_frozen(source, dir, 0, UffdWanted::yes);
  ::kill(source.pid(), SIGCONT);
}

// A fresh guest runs for 100 ms, is frozen, and resumed from its RAM.
void run_freeze_resume(const ScratchDir& dir, const GuestOptions& o, const std::string& tag,
                       std::optional<GuestProcess>& source, Resumed& out) {
  source.emplace(ASSERT_OK(GuestProcess::spawn(guest_binary(), o, dir.path())));
  std::this_thread::sleep_for(100ms);
  freeze(*source);
  resume_frozen(*source, dir, tag, UffdWanted::no, out);
}

// A resumed guest (memfd RAM) is itself a valid source: migrate it again.
TEST(GuestResumeChain, ResumedGuestMigratesAgain) {
  ScratchDir dir;
  GuestOptions o = options(2 << 20, "max", 3);
  o.write = "word";
  std::optional<GuestProcess> source;
  Resumed first;
  run_freeze_resume(dir, o, "first", source, first);
  ASSERT_FALSE(HasFatalFailure());
  freeze(*first.guest);
  Resumed second;
  resume_frozen(*first.guest, dir, "second", UffdWanted::no, second);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_OK(second.server->release());
  EXPECT_EQ(ASSERT_OK(second.guest->control().status()).threads, 3u);
  EXPECT_EQ(ASSERT_OK(second.guest->stop(5000)), 0);
}

// The engine that resumed the guest goes away before releasing it (it died
// mid post-copy): pages it never delivered would read as zeros, so the guest
// must end itself instead of running on.
TEST(GuestResumeErrors, EngineGoneBeforeReleaseEndsTheGuest) {
  ScratchDir dir;
  std::optional<GuestProcess> source;
  Resumed r;
  run_freeze_resume(dir, options(2 << 20, "max", 2), "hangup", source, r);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(r.guest->control().status().ok()) << "running before the hang-up";
  r.server.reset();
  EXPECT_EQ(ASSERT_OK(r.guest->wait_exit(5000)), 3);
  ::kill(source->pid(), SIGCONT);
}

TEST(GuestResumeErrors, ImageWithoutHeaderIsRefused) {
  ScratchDir dir;
  std::string path = dir.file("handoff.sock");
  HandoffServer server = ASSERT_OK(HandoffServer::listen(path));
  GuestProcess dest = ASSERT_OK(GuestProcess::spawn_resume(guest_binary(), path, dir.path()));
  GuestRam ram = ASSERT_OK(server.accept(kDefaultRamAddr, 1 << 20, UffdWanted::no, 10000));
  ASSERT_OK(server.go());  // the memfd is all zeros
  auto r = server.wait_running(10000);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("bad magic"), std::string::npos) << r.error().message;
  EXPECT_EQ(ASSERT_OK(dest.wait_exit(5000)), 1);
}

TEST(GuestResumeErrors, AbortEndsTheGuest) {
  ScratchDir dir;
  std::string path = dir.file("handoff.sock");
  HandoffServer server = ASSERT_OK(HandoffServer::listen(path));
  GuestProcess dest = ASSERT_OK(GuestProcess::spawn_resume(guest_binary(), path, dir.path()));
  GuestRam ram = ASSERT_OK(server.accept(kDefaultRamAddr, 1 << 20, UffdWanted::yes, 10000));
  EXPECT_TRUE(ram.uffd.valid());
  ASSERT_OK(server.abort());
  EXPECT_EQ(ASSERT_OK(dest.wait_exit(5000)), 1);
}

}  // namespace
}  // namespace lm::guest::test

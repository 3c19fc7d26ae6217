// A two-host rig on one machine: two network namespaces, "src" and "dst",
// joined by a veth pair (MTU 9000), each end optionally rate-limited with a
// tc tbf or htb qdisc on its egress. Both veth ends are created directly
// inside their namespaces, so nothing of a rig appears among the host's
// interfaces, and every rig uses the same addresses (10.77.0.1 src,
// 10.77.0.2 dst) without colliding with another: the namespaces' names carry
// the rig's name ("lm-<name>-src", "lm-<name>-dst").
//
// Programs run inside a side with `ip netns exec <namespace> ...`
// (exec_argv), which also gives them the namespace's /sys, as DPDK's
// af_packet driver needs. Everything is done with iproute2's `ip` and `tc`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace lm::rig {

enum class Side { src, dst };
enum class Shaper { tbf, htb };

struct Spec {
  std::string name = "rig";  // [A-Za-z0-9_]{1,24}
  uint64_t rate_bps = 0;     // bits per second on each end's egress; 0: unlimited
  Shaper shaper = Shaper::tbf;
  unsigned mtu = 9000;
};

// The names and addresses of one rig, which follow from its name alone.
struct Layout {
  std::string name;
  std::string netns[2];      // indexed by Side
  std::string interface[2];  // the veth end inside each namespace
  std::string ip[2];         // its IPv4 address (/24)

  const std::string& netns_of(Side s) const { return netns[int(s)]; }
  const std::string& interface_of(Side s) const { return interface[int(s)]; }
  const std::string& ip_of(Side s) const { return ip[int(s)]; }
};

Result<Layout> layout(std::string_view name);

// "1gbit", "2.5gbit", "10gbit", "25gbit", "500mbit", "100kbit", "8000bit"
// (tc's decimal units, bits per second) into bits per second.
Result<uint64_t> parse_rate(std::string_view text);
Result<Side> parse_side(std::string_view text);  // "src" or "dst"
Result<Shaper> parse_shaper(std::string_view text);  // "tbf" or "htb"

// Creates the rig: all or nothing (a failure removes what this call made).
// Fails when either namespace already exists.
Result<Layout> up(const Spec& spec);
// Removes whatever exists of rig `name` (a partial rig too). Returns whether
// there was anything to remove.
Result<bool> down(std::string_view name);
// Whether both namespaces of rig `name` exist, and a description of each side
// (addresses, link, qdisc) as `ip` and `tc` print them.
struct Status {
  bool up = false;
  bool partial = false;  // one namespace without the other
  std::string text;
};
Result<Status> status(std::string_view name);

// `ip netns exec <namespace of side> command...`.
std::vector<std::string> exec_argv(const Layout& layout, Side side, const std::vector<std::string>& command);

// Moves the calling thread into one side's network namespace until this
// object goes (setns(CLONE_NEWNET) is per thread): sockets it makes, threads
// it starts and children it spawns meanwhile belong to that namespace; other
// threads stay where they are. The destructor moves the thread back.
class InNetns {
 public:
  static Result<InNetns> enter(const Layout& layout, Side side);
  InNetns(InNetns&& o) noexcept : back_(std::move(o.back_)) {}
  InNetns& operator=(InNetns&&) = delete;
  ~InNetns();

 private:
  explicit InNetns(UniqueFd back) : back_(std::move(back)) {}
  UniqueFd back_;  // the thread's namespace before
};

// The inode of a network namespace file (/run/netns/NAME, /proc/PID/ns/net):
// two that are equal are the same namespace; 0 when it cannot be read.
uint64_t netns_inode(const std::string& path);

// A rig that is removed when this object goes: for a runner that sets a rig
// up around a migration and must leave nothing behind, even on failure.
class Rig {
 public:
  static Result<Rig> up(const Spec& spec);
  Rig(Rig&& o) noexcept : layout_(std::move(o.layout_)), owned_(o.owned_) { o.owned_ = false; }
  Rig& operator=(Rig&&) = delete;
  Rig(const Rig&) = delete;
  ~Rig();

  const Layout& layout() const { return layout_; }
  std::vector<std::string> exec_argv(Side side, const std::vector<std::string>& command) const {
    return rig::exec_argv(layout_, side, command);
  }
  // Removes the rig now, reporting a failure (the destructor can only print it).
  Result<void> down();

 private:
  explicit Rig(Layout l) : layout_(std::move(l)), owned_(true) {}
  Layout layout_;
  bool owned_ = false;
};

}  // namespace lm::rig

#include "harness/rig.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "common/clock.hpp"
#include "common/subprocess.hpp"

namespace lm::rig {
namespace {

constexpr int kCommandTimeoutMs = 15000;

std::string joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

// Runs an iproute2 command, its output captured; an error names the command
// and carries what it printed on stderr.
Result<std::string> run(const std::vector<std::string>& argv) {
  SpawnOptions options;
  options.stdin_to = Stdio::null;
  options.stdout_to = Stdio::pipe;
  options.stderr_to = Stdio::pipe;
  options.on_parent_exit = ParentExit::die;
  auto child = LM_TRY_CTX(Subprocess::spawn(argv, options), joined(argv));
  UniqueFd fds[2] = {child.take_pipe(STDOUT_FILENO), child.take_pipe(STDERR_FILENO)};
  std::string text[2];
  Stopwatch waited;
  for (int open = 2; open > 0;) {
    pollfd p[2];
    for (int i = 0; i < 2; ++i) p[i] = {fds[i].valid() ? fds[i].get() : -1, POLLIN, 0};
    int left = kCommandTimeoutMs - int(waited.elapsed_ms());
    if (left <= 0 || poll(p, 2, left) <= 0) break;
    for (int i = 0; i < 2; ++i) {
      if (!p[i].revents) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].get(), buf, sizeof buf);
      if (n > 0) {
        text[i].append(buf, size_t(n));
      } else {
        fds[i].reset();
        --open;
      }
    }
  }
  auto status = child.wait_or_kill(std::max(0, kCommandTimeoutMs - int(waited.elapsed_ms())));
  if (!status) return std::move(status).error().context(joined(argv));
  if (!status->success()) {
    std::string err = text[1];
    while (!err.empty() && std::isspace((unsigned char)err.back())) err.pop_back();
    return Error::msg(joined(argv) + ": " + status->text() + (err.empty() ? "" : ": " + err));
  }
  return text[0];
}

bool netns_exists(const std::string& netns) {
  struct stat st;
  return ::stat(("/run/netns/" + netns).c_str(), &st) == 0;
}

std::string rate_text(uint64_t bps) { return std::to_string(bps) + "bit"; }

// The egress qdisc of one veth end. The bucket holds at least one timer
// tick's worth of bytes at the rate (CONFIG_HZ 250 here: 4 ms), else the
// shaper cannot reach its rate, and at least one 64 KiB GSO segment.
Result<void> shape(const Layout& l, Side side, const Spec& spec) {
  const std::string& ns = l.netns_of(side);
  const std::string& dev = l.interface_of(side);
  uint64_t burst = std::max<uint64_t>(spec.rate_bps / 8 / 250, 128 << 10);
  std::string rate = rate_text(spec.rate_bps), burst_text = std::to_string(burst);
  if (spec.shaper == Shaper::tbf) {
    LM_TRY(run({"tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", burst_text,
                "latency", "20ms"}));
    return {};
  }
  LM_TRY(run({"tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"}));
  LM_TRY(run({"tc", "-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate,
              "ceil", rate, "burst", burst_text, "cburst", burst_text, "quantum", "65536"}));
  return {};
}

Result<void> build(const Layout& l, const Spec& spec) {
  for (Side s : {Side::src, Side::dst}) LM_TRY(run({"ip", "netns", "add", l.netns_of(s)}));
  const std::string mtu = std::to_string(spec.mtu);
  LM_TRY(run({"ip", "link", "add", l.interface_of(Side::src), "netns", l.netns_of(Side::src), "mtu", mtu, "type",
              "veth", "peer", "name", l.interface_of(Side::dst), "netns", l.netns_of(Side::dst), "mtu", mtu}));
  for (Side s : {Side::src, Side::dst}) {
    const std::string& ns = l.netns_of(s);
    LM_TRY(run({"ip", "-n", ns, "addr", "add", l.ip_of(s) + "/24", "dev", l.interface_of(s)}));
    LM_TRY(run({"ip", "-n", ns, "link", "set", "lo", "up"}));
    LM_TRY(run({"ip", "-n", ns, "link", "set", l.interface_of(s), "up"}));
    if (spec.rate_bps) LM_TRY(shape(l, s, spec));
  }
  return {};
}

}  // namespace

Result<Layout> layout(std::string_view name) {
  if (name.empty() || name.size() > 24 ||
      !std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum((unsigned char)c) || c == '_'; }))
    return Error::msg("rig name '" + std::string(name) + "': expected 1 to 24 letters, digits or '_'");
  Layout l;
  l.name = std::string(name);
  l.netns[int(Side::src)] = "lm-" + l.name + "-src";
  l.netns[int(Side::dst)] = "lm-" + l.name + "-dst";
  l.interface[int(Side::src)] = "lm-src";
  l.interface[int(Side::dst)] = "lm-dst";
  l.ip[int(Side::src)] = "10.77.0.1";
  l.ip[int(Side::dst)] = "10.77.0.2";
  return l;
}

Result<uint64_t> parse_rate(std::string_view text) {
  std::string t(text);
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  std::string unit(end);
  for (auto& c : unit) c = char(std::tolower((unsigned char)c));
  double scale = unit == "bit" ? 1 : unit == "kbit" ? 1e3 : unit == "mbit" ? 1e6 : unit == "gbit" ? 1e9 : 0;
  if (end == t.c_str() || scale == 0 || !(v > 0) || v * scale < 8000 || v * scale > 400e9)
    return Error::msg("rate '" + t + "': expected e.g. 1gbit, 2.5gbit, 10gbit, 500mbit (8kbit to 400gbit)");
  return uint64_t(std::llround(v * scale));
}

Result<Side> parse_side(std::string_view text) {
  if (text == "src") return Side::src;
  if (text == "dst") return Side::dst;
  return Error::msg("side '" + std::string(text) + "': expected src or dst");
}

Result<Shaper> parse_shaper(std::string_view text) {
  if (text == "tbf") return Shaper::tbf;
  if (text == "htb") return Shaper::htb;
  return Error::msg("shaper '" + std::string(text) + "': expected tbf or htb");
}

Result<Layout> up(const Spec& spec) {
  Layout l = LM_TRY(layout(spec.name));
  for (Side s : {Side::src, Side::dst})
    if (netns_exists(l.netns_of(s)))
      return Error::sys(EEXIST, "rig " + l.name + ": namespace " + l.netns_of(s) +
                                    " (livemig rig down --name " + l.name + ")");
  if (auto built = build(l, spec); !built) {
    (void)down(l.name);  // the namespaces take their veth end and qdiscs with them
    return std::move(built).error().context("rig " + l.name);
  }
  return l;
}

Result<bool> down(std::string_view name) {
  Layout l = LM_TRY(layout(name));
  bool removed = false;
  std::optional<Error> first_error;
  for (Side s : {Side::src, Side::dst}) {
    if (!netns_exists(l.netns_of(s))) continue;
    auto r = run({"ip", "netns", "del", l.netns_of(s)});
    if (r)
      removed = true;
    else if (!first_error)
      first_error = std::move(r).error();
  }
  if (first_error) return std::move(*first_error).context("rig " + l.name);
  return removed;
}

Result<Status> status(std::string_view name) {
  Layout l = LM_TRY(layout(name));
  Status st;
  int present = 0;
  for (Side s : {Side::src, Side::dst}) {
    const std::string& ns = l.netns_of(s);
    st.text += strf("%s  namespace %s", s == Side::src ? "src" : "dst", ns.c_str());
    if (!netns_exists(ns)) {
      st.text += ": absent\n";
      continue;
    }
    ++present;
    st.text += "\n" + LM_TRY(run({"ip", "-n", ns, "-br", "addr", "show", "dev", l.interface_of(s)}));
    st.text += LM_TRY(run({"tc", "-n", ns, "qdisc", "show", "dev", l.interface_of(s)}));
    st.text += LM_TRY(run({"tc", "-n", ns, "class", "show", "dev", l.interface_of(s)}));
  }
  st.up = present == 2;
  st.partial = present == 1;
  return st;
}

std::vector<std::string> exec_argv(const Layout& layout, Side side, const std::vector<std::string>& command) {
  std::vector<std::string> argv = {"ip", "netns", "exec", layout.netns_of(side)};
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

Result<InNetns> InNetns::enter(const Layout& layout, Side side) {
  UniqueFd back(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!back.valid()) return Error::from_errno("open this thread's network namespace");
  const std::string path = "/run/netns/" + layout.netns_of(side);
  UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return Error::from_errno("open " + path);
  if (::setns(ns.get(), CLONE_NEWNET) != 0) return Error::from_errno("enter " + path);
  return InNetns(std::move(back));
}

InNetns::~InNetns() {
  // Failing to go back would leave this thread's later sockets in the rig.
  if (back_.valid() && ::setns(back_.get(), CLONE_NEWNET) != 0) {
    std::perror("livemig: leave the rig's network namespace");
    std::abort();
  }
}

uint64_t netns_inode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? uint64_t(st.st_ino) : 0;
}

Result<Rig> Rig::up(const Spec& spec) { return Rig(LM_TRY(rig::up(spec))); }

Result<void> Rig::down() {
  if (!owned_) return {};
  owned_ = false;
  LM_TRY(rig::down(layout_.name));
  return {};
}

Rig::~Rig() {
  if (auto r = down(); !r) std::fprintf(stderr, "rig %s: %s\n", layout_.name.c_str(), r.error().message.c_str());
}

}  // namespace lm::rig

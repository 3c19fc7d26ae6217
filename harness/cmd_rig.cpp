// livemig rig up|down|status|exec: the two-host rig on one machine
// (harness/rig.hpp, docs/benchmarks-rig.md).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness/cli.hpp"
#include "harness/commands.hpp"
#include "harness/rig.hpp"

namespace lm::cmd {
namespace {

struct RigArgs {
  std::string name = "rig";
  rig::Spec spec;
  rig::Side side = rig::Side::src;
  std::vector<std::string> command;
};

void add_name(CLI::App& app, RigArgs& a) {
  app.add_option("--name", a.name, "the rig's name: its namespaces are lm-NAME-src and lm-NAME-dst")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            auto l = rig::layout(text);
            return l ? std::string() : l.error().message;
          },
          "NAME"));
}

int failed(const char* what, const Error& e) {
  std::fprintf(stderr, "livemig rig %s: %s\n", what, e.message.c_str());
  return 1;
}

int rig_up(RigArgs& a) {
  a.spec.name = a.name;
  auto l = rig::up(a.spec);
  if (!l) return failed("up", l.error());
  std::printf("rig %s up: %s %s (%s) <-> %s %s (%s), mtu %u, %s\n", l->name.c_str(),
              l->netns_of(rig::Side::src).c_str(), l->interface_of(rig::Side::src).c_str(),
              l->ip_of(rig::Side::src).c_str(), l->netns_of(rig::Side::dst).c_str(),
              l->interface_of(rig::Side::dst).c_str(), l->ip_of(rig::Side::dst).c_str(), a.spec.mtu,
              a.spec.rate_bps ? strf("%.4g Gbit/s (%s) on each end's egress", double(a.spec.rate_bps) / 1e9,
                                     a.spec.shaper == rig::Shaper::tbf ? "tbf" : "htb")
                                    .c_str()
                              : "unlimited");
  return 0;
}

int rig_down(const RigArgs& a) {
  auto removed = rig::down(a.name);
  if (!removed) return failed("down", removed.error());
  std::printf("rig %s: %s\n", a.name.c_str(), *removed ? "removed" : "nothing to remove");
  return 0;
}

int rig_status(const RigArgs& a) {
  auto st = rig::status(a.name);
  if (!st) return failed("status", st.error());
  std::printf("rig %s: %s\n%s", a.name.c_str(), st->up ? "up" : st->partial ? "partial (livemig rig down)" : "down",
              st->text.c_str());
  return st->up ? 0 : 1;
}

// Replaces this process with `ip netns exec <namespace> command...`: the
// command's exit status is the exit status.
int rig_exec(const RigArgs& a) {
  auto l = rig::layout(a.name);
  if (!l) return failed("exec", l.error());
  std::vector<std::string> argv = rig::exec_argv(*l, a.side, a.command);
  std::vector<char*> args;
  for (auto& s : argv) args.push_back(s.data());
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  return failed("exec", Error::from_errno("exec ip netns exec " + l->netns_of(a.side)));
}

}  // namespace

Run rig(CLI::App& app) {
  auto a = std::make_shared<RigArgs>();
  app.require_subcommand(1);
  CLI::App* up = app.add_subcommand("up", "create the rig: two namespaces joined by a veth pair");
  add_name(*up, *a);
  add_parsed(*up, "--rate", a->spec.rate_bps, rig::parse_rate,
             "limit each end's egress: 1gbit, 2.5gbit, 10gbit, 25gbit (default: unlimited)");
  add_parsed(*up, "--shaper", a->spec.shaper, rig::parse_shaper, "the qdisc that limits the rate: tbf (default), htb");
  up->add_option("--mtu", a->spec.mtu, "the veth MTU")->check(CLI::Range(1280u, 65535u))->capture_default_str();
  CLI::App* down = app.add_subcommand("down", "remove the rig (a partial one too)");
  add_name(*down, *a);
  CLI::App* status = app.add_subcommand("status", "show the rig's namespaces, addresses and qdiscs (exit 1: not up)");
  add_name(*status, *a);
  CLI::App* exec = app.add_subcommand("exec", "run a command inside one side: rig exec --side dst -- CMD ARGS...");
  add_name(*exec, *a);
  add_parsed(*exec, "--side", a->side, rig::parse_side, "src or dst")->required();
  exec->add_option("command", a->command, "the command and its arguments (after --)")->required();
  return [a, up, down, status] {
    if (up->parsed()) return rig_up(*a);
    if (down->parsed()) return rig_down(*a);
    if (status->parsed()) return rig_status(*a);
    return rig_exec(*a);
  };
}

}  // namespace lm::cmd

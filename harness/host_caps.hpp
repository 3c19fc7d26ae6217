// Everything livemig needs from this host, probed once into one struct and
// shown by `livemig check`. Each capability is a real attempt; "no" carries
// the reason.
#pragma once

#include <string>
#include <vector>

#include "common/json.hpp"
#include "dirtytrack/probe.hpp"

namespace lm {

struct HostCaps {
  std::string kernel;  // uname release
  unsigned cpus = 0;
  dt::DirtyTrackCaps dirtytrack;
  dt::Capability io_uring;
  std::vector<std::pair<std::string, bool>> io_uring_ops;  // the opcodes the transports use
  dt::Capability dpdk;  // present at build time
  dt::Capability hugepages;
  dt::Capability cgroup_v2;
  dt::Capability kvm;
  std::vector<std::pair<std::string, dt::Capability>> trackers;    // by preference
  std::vector<std::pair<std::string, dt::Capability>> transports;  // compiled-in backends, by preference
};

HostCaps probe_host();

// One row per capability: name, yes/no, detail.
struct CapRow {
  std::string name;
  dt::Capability cap;
};
std::vector<CapRow> cap_rows(const HostCaps& caps);

std::string format_table(const HostCaps& caps);
void write_json(JsonWriter& w, const HostCaps& caps);

}  // namespace lm

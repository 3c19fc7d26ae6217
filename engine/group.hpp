// A group: m migrations, each the one-migration object with its own session,
// tracker and policy, run by a strategy over one shared link (LinkShare):
//  - serial: one complete live migration after another; a failure stops the
//    group before the next VM;
//  - serial-correlated (the course notes' serial): every VM's destination is
//    prepared at once; VM 1 pre-copies while the others run; when it freezes,
//    the others are stopped too (SIGSTOP) and copied one after another, each
//    once the VM before it runs at its destination, so the group's downtime
//    holds their copies (and not their setups); a failure stops the group.
//    A post-copy or hybrid VM 1 freezes for its switchover; a post-copy or
//    hybrid VM k (stopped: nothing to pre-copy) switches over at once in its
//    turn and hands the turn on at its resume, while its pages still stream;
//  - parallel: all at once, the link shared by weight; each VM's first round
//    waits until every destination is ready (or its VM failed), so that the
//    pre-copies overlap; a failure ends only that VM.
// Every VM that did not complete runs on (its engine rolled it back; a VM
// the group stopped is continued), and so does one that completed with its
// source kept running (image mode), as soon as its migration ended.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/cancel.hpp"
#include "engine/config.hpp"
#include "engine/link_share.hpp"
#include "engine/model.hpp"
#include "engine/results.hpp"
#include "engine/source.hpp"
#include "transport/session.hpp"

namespace lm::engine {

struct GroupVm {
  SourceOptions source;  // pid (serial-correlated stops it by pid), its own cancel, callbacks
  // Its destination: an address, or a dialer over the in-process link.
  std::string address;
  transport::Dial dial;
  std::string peer;  // names the in-process destination
  double weight = 1;
};

struct GroupOptions {
  GroupStrategy strategy = GroupStrategy::parallel;
  LinkShareConfig link;
  // Stops the group: no further VM starts (each VM's own cancel stops it).
  std::shared_ptr<Cancel> cancel;
};

// One VM as the group saw it (ms since the group's start).
struct GroupVmFigures {
  bool started = false;
  double start_ms = 0;
  double ready_ms = 0;     // its destination ready (parallel, serial-correlated: then it waited)
  double sending_ms = 0;   // its first round began (its destination was ready)
  double resumed_ms = 0;   // its destination running the VM
  double completed_ms = 0; // its destination holding every page (pre-copy: at the resume)
  double downtime_ms = 0;  // serial-correlated: from the group's freeze to its resume
  MigrationMode mode = MigrationMode::precopy;  // as asked (a stopped hybrid VM runs as post-copy)
  // A VM whose migration failed: the phase its source failed in, and whether
  // that lost it. Before its resume it rolls back and runs on at its source;
  // after a post-copy resume its memory is split between the hosts (the
  // destination ran it, the source holds the pages not yet pushed): the
  // frozen source is ended, not run on, and the destination ends its copy.
  std::optional<SourcePhase> failed_in;
  bool lost = false;
};

struct GroupResult {
  GroupStrategy strategy = GroupStrategy::parallel;
  std::vector<MigrationResult> vms;  // each VM's full result
  std::vector<GroupVmFigures> figures;
  std::optional<size_t> failed_vm;   // the first that failed (0-based)
  std::string failure;               // and why
  double total_time_ms = 0;          // first start to last completion
  // The time in which some VM was migrating (from its first round, its
  // destination prepared, to its completion): QEMU's total-time for a group,
  // without the destinations' preparation; what the model predicts.
  double migration_time_ms = 0;
  double downtime_ms = 0;            // the group's
  double freeze_ms = 0;              // serial-correlated: VM 1 frozen and the others stopped
  LinkShare::Figures link;
  double link_bytes_per_s = 0;       // R: pages delivered per second while any VM sent
  ModelInput model_input;
  std::optional<ModelPrediction> model;
  std::string no_model;  // why there is no prediction
  bool completed() const { return !failed_vm && !vms.empty(); }
};

// The group's failure line for a VM (`vm` names it: "VM 2") that failed
// with `error`: the phase, and what became of its source.
std::string group_failure(const std::string& vm, const GroupVmFigures& f, const std::string& error);

// Runs the group; each VM's outcome is in its result (completed, error).
GroupResult run_group(std::vector<GroupVm> vms, const GroupOptions& options);

// The model's figures for a group: R the group's, D and Vm the VMs' mean.
// The model is pre-copy's: a group with a post-copy or hybrid VM gets none.
void predict_group(GroupResult& g);

}  // namespace lm::engine

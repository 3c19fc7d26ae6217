#include "dirtytrack/address_space.hpp"

#include <signal.h>

namespace lm::dt {

Result<void> check_process_exists(pid_t pid) {
  if (pid <= 0) return Error::msg(strf("pid %d: not a process id", pid));
  if (::kill(pid, 0) != 0 && errno == ESRCH) return Error::sys(ESRCH, strf("pid %d", pid));
  return ok();
}

RangeList appeared_ranges(const std::vector<MappingChange>& changes) {
  RangeList out;
  for (const auto& c : changes) {
    switch (c.kind) {
      case MappingChange::Kind::added:
      case MappingChange::Kind::remapped:
      case MappingChange::Kind::replaced:
        out.push_back(c.after.range());
        break;
      case MappingChange::Kind::grown:
        out.push_back({c.before.end, c.after.end});
        break;
      default:
        break;
    }
  }
  coalesce(out);
  return out;
}

Result<MappingList> ScopedAddressSpace::read_selected() const {
  auto all = read_maps(pid_);
  if (!all) {
    if (all.error().code == ESRCH) return Error::sys(ESRCH, strf("pid %d has exited", pid_));
    return std::move(all).error();
  }
  return select(*all, scope_);
}

Result<void> ScopedAddressSpace::init(pid_t pid, const Scope& scope) {
  LM_TRY(check_process_exists(pid));
  pid_ = pid;
  scope_ = scope;
  if (scope_.kind == ScopeKind::ranges) {
    for (auto& r : scope_.ranges) r = {page_floor(r.start), page_ceil(r.end)};
    coalesce(scope_.ranges);
    if (scope_.ranges.empty()) return Error::msg(strf("pid %d: the tracking scope has no ranges", pid));
  }
  mappings_ = LM_TRY(read_selected());
  ranges_ = ranges_of(mappings_);
  if (mappings_.empty())
    return Error::msg(strf("pid %d: no writable mapping in the tracking scope", pid));
  return ok();
}

Result<MappingList> scoped_mappings(pid_t pid, const Scope& scope) {
  ScopedAddressSpace space;
  LM_TRY(space.init(pid, scope));
  return space.mappings();
}

Result<std::vector<MappingChange>> ScopedAddressSpace::refresh() {
  MappingList now = LM_TRY(read_selected());
  auto changes = diff_mappings(mappings_, now);
  mappings_ = std::move(now);
  ranges_ = ranges_of(mappings_);
  return changes;
}

}  // namespace lm::dt

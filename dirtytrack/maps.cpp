#include "dirtytrack/maps.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "common/fd.hpp"

namespace lm::dt {

std::string_view mapping_kind_name(MappingKind k) {
  switch (k) {
    case MappingKind::anonymous: return "anonymous";
    case MappingKind::heap: return "heap";
    case MappingKind::stack: return "stack";
    case MappingKind::file: return "file";
    case MappingKind::vdso: return "vdso";
    case MappingKind::vvar: return "vvar";
    case MappingKind::vsyscall: return "vsyscall";
    case MappingKind::special: return "special";
  }
  return "unknown";
}

std::string_view change_kind_name(MappingChange::Kind k) {
  switch (k) {
    case MappingChange::Kind::added: return "added";
    case MappingChange::Kind::removed: return "removed";
    case MappingChange::Kind::grown: return "grown";
    case MappingChange::Kind::shrunk: return "shrunk";
    case MappingChange::Kind::remapped: return "remapped";
    case MappingChange::Kind::replaced: return "replaced";
  }
  return "unknown";
}

bool Mapping::same_as(const Mapping& o) const {
  return start == o.start && end == o.end && read == o.read && write == o.write && exec == o.exec &&
         shared == o.shared && offset == o.offset && inode == o.inode && dev_major == o.dev_major &&
         dev_minor == o.dev_minor && path == o.path;
}

static MappingKind classify(const std::string& path, uint64_t inode) {
  if (path.empty()) return MappingKind::anonymous;
  if (path == "[heap]") return MappingKind::heap;
  if (path == "[stack]" || path.rfind("[stack:", 0) == 0) return MappingKind::stack;
  if (path == "[vdso]") return MappingKind::vdso;
  if (path == "[vvar]" || path == "[vvar_vclock]") return MappingKind::vvar;
  if (path == "[vsyscall]") return MappingKind::vsyscall;
  if (path[0] == '[') return MappingKind::special;  // [anon:name], [uprobes], ...
  (void)inode;
  return MappingKind::file;
}

Result<MappingList> parse_maps(std::string_view text) {
  MappingList out;
  size_t pos = 0;
  unsigned line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string line(text.substr(pos, nl - pos));
    pos = nl + 1;
    line_no++;
    if (line.empty()) continue;
    Mapping m;
    char perms[8] = {};
    int path_at = 0;
    unsigned long long start, end, offset, inode;
    unsigned major, minor;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &offset, &major,
                    &minor, &inode, &path_at) < 7 ||
        std::string_view(perms).size() != 4)
      return Error::msg(strf("maps line %u is malformed: '%s'", line_no, line.c_str()));
    m.start = start;
    m.end = end;
    m.offset = offset;
    m.inode = inode;
    m.dev_major = major;
    m.dev_minor = minor;
    m.read = perms[0] == 'r';
    m.write = perms[1] == 'w';
    m.exec = perms[2] == 'x';
    m.shared = perms[3] == 's';
    if (path_at > 0 && size_t(path_at) <= line.size()) m.path = line.substr(size_t(path_at));
    m.kind = classify(m.path, m.inode);
    out.push_back(std::move(m));
  }
  return out;
}

Result<MappingList> read_maps(pid_t pid) {
  std::string path = strf("/proc/%d/maps", pid);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return Error::sys(ESRCH, strf("pid %d: read maps", pid));
    return Error::from_errno(strf("pid %d: open %s", pid, path.c_str()));
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      // ESRCH while reading: the process exited between open and read.
      return Error::from_errno(strf("pid %d: read %s", pid, path.c_str()));
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
  }
  // An exited (zombie) process has an empty maps file.
  if (text.empty()) return Error::sys(ESRCH, strf("pid %d: maps is empty (process exited)", pid));
  return LM_TRY_CTX(parse_maps(text), strf("pid %d", pid));
}

bool is_migratable(const Mapping& m) {
  switch (m.kind) {
    case MappingKind::vdso:
    case MappingKind::vvar:
    case MappingKind::vsyscall:
      return false;
    default:
      break;
  }
  if (!m.read && !m.write && !m.exec) return false;  // guard page
  return m.write && !m.shared;
}

MappingList select(const MappingList& all, const Scope& scope) {
  MappingList out;
  if (scope.kind == ScopeKind::migratable) {
    for (const auto& m : all)
      if (is_migratable(m)) out.push_back(m);
    return out;
  }
  size_t j = 0;
  for (const auto& m : all) {
    if (!m.write || m.kind == MappingKind::vvar || m.kind == MappingKind::vdso) continue;
    while (j < scope.ranges.size() && scope.ranges[j].end <= m.start) j++;
    for (size_t k = j; k < scope.ranges.size() && scope.ranges[k].start < m.end; k++) {
      Mapping c = m;
      c.start = std::max(m.start, scope.ranges[k].start);
      c.end = std::min(m.end, scope.ranges[k].end);
      if (c.start < c.end) out.push_back(std::move(c));
    }
  }
  return out;
}

RangeList ranges_of(const MappingList& mappings) {
  RangeList out;
  for (const auto& m : mappings) append_merge(out, m.range());
  coalesce(out);
  return out;
}

std::vector<MappingChange> diff_mappings(const MappingList& before, const MappingList& after) {
  std::vector<MappingChange> changes;
  std::vector<const Mapping*> removed, added;
  size_t i = 0, j = 0;
  // Both lists are sorted by start (maps order).
  while (i < before.size() || j < after.size()) {
    if (j == after.size() || (i < before.size() && before[i].start < after[j].start)) {
      removed.push_back(&before[i++]);
    } else if (i == before.size() || after[j].start < before[i].start) {
      added.push_back(&after[j++]);
    } else {
      const Mapping& b = before[i++];
      const Mapping& a = after[j++];
      bool same_backing = b.inode == a.inode && b.path == a.path && b.shared == a.shared;
      if (!same_backing || b.offset != a.offset)
        changes.push_back({MappingChange::Kind::replaced, b, a});
      else if (a.end > b.end)
        changes.push_back({MappingChange::Kind::grown, b, a});
      else if (a.end < b.end)
        changes.push_back({MappingChange::Kind::shrunk, b, a});
      else if (!b.same_as(a))
        changes.push_back({MappingChange::Kind::replaced, b, a});
    }
  }
  std::vector<bool> added_used(added.size(), false);
  for (const Mapping* r : removed) {
    bool matched = false;
    for (size_t k = 0; k < added.size() && !matched; k++) {
      const Mapping* a = added[k];
      // /proc/PID/maps prints offset 0 for every anonymous mapping, so a
      // move cannot be proven from it: an anonymous mapping that vanished
      // and one of the same size and permissions that appeared are taken
      // as one mremap.
      bool same_shape = r->bytes() == a->bytes() && r->read == a->read && r->write == a->write &&
                        r->exec == a->exec && r->shared == a->shared;
      if (added_used[k] || r->inode != 0 || a->inode != 0 || r->path != a->path || !same_shape) continue;
      added_used[k] = true;
      matched = true;
      changes.push_back({MappingChange::Kind::remapped, *r, *a});
    }
    if (!matched) changes.push_back({MappingChange::Kind::removed, *r, Mapping{}});
  }
  for (size_t k = 0; k < added.size(); k++)
    if (!added_used[k]) changes.push_back({MappingChange::Kind::added, Mapping{}, *added[k]});
  std::sort(changes.begin(), changes.end(), [](const MappingChange& x, const MappingChange& y) {
    uint64_t xs = x.after.end ? x.after.start : x.before.start;
    uint64_t ys = y.after.end ? y.after.start : y.before.start;
    return xs < ys;
  });
  return changes;
}

}  // namespace lm::dt

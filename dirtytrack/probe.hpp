// The kernel features dirty tracking depends on, probed once into one struct.
// A probe never lies: each capability is a real attempt, and "unavailable"
// carries the reason.
#pragma once

#include <cstdint>
#include <string>

namespace lm::dt {

struct Capability {
  bool available = false;
  std::string detail;  // what worked, or why not
};

struct DirtyTrackCaps {
  Capability userfaultfd;
  uint64_t uffd_features = 0;  // UFFDIO_API's answer
  Capability uffd_wp_async;    // UFFD_FEATURE_WP_ASYNC, exercised end to end with PAGEMAP_SCAN
  Capability uffd_wp_unpopulated;
  Capability uffd_missing_shmem;
  Capability uffd_minor_shmem;
  Capability pagemap_scan;
  Capability soft_dirty;  // write, clear_refs, write, read pagemap bit 55
  Capability ptrace;      // seize a child; Yama scope reported
  Capability pidfd_getfd;
  Capability process_vm_readv;
};

// `skip` leaves soft_dirty unavailable as "not probed": its probe costs
// ~40 ms here (clear_refs walks this process's page tables, and the verdict
// reads the kernel config through zcat), which an engine that will not use
// it should not wait for (make_tracker(name)).
enum class SoftDirtyProbe { run, skip };
DirtyTrackCaps probe_dirtytrack(SoftDirtyProbe soft_dirty = SoftDirtyProbe::run);

}  // namespace lm::dt

namespace lm::dt {
// The soft-dirty probe alone (write, clear_refs, write, read bit 55), for
// the soft-dirty tracker to refuse at start on kernels without it.
Capability probe_soft_dirty();
}  // namespace lm::dt

// Compares a memory image on disk (engine/image_dir.hpp) with a live or
// frozen process: page by page over the image's mappings that the process
// still has, and mapping by mapping (missing, moved or resized, other
// protections, new ones). `livemig image verify` prints what this finds.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "engine/image_dir.hpp"

namespace lm::engine {

struct ImageMappingDifference {
  uint64_t addr = 0;  // the image's mapping
  uint64_t bytes = 0;
  std::string what;   // "missing", "now [0x..,0x..)", "prot rw- now r--", "new in the process"
};

struct ImageComparison {
  static constexpr size_t kListed = 8;  // addresses listed per kind

  pid_t pid = 0;
  uint64_t image_pages = 0;       // pages of the image's mappings
  uint64_t pages_compared = 0;    // of them still mapped in the process and read
  uint64_t pages_equal = 0;
  uint64_t pages_changed = 0;
  std::vector<uint64_t> changed;  // the first kListed changed page addresses
  uint64_t pages_unmapped = 0;    // image pages the process no longer maps
  uint64_t pages_unreadable = 0;  // mapped, but process_vm_readv could not read them
  std::string unreadable_error;   // the first one: "pid P: read page 0x..: <errno text>"
  std::vector<ImageMappingDifference> missing;  // image mappings the process no longer has at all
  std::vector<ImageMappingDifference> changed_mappings;  // bounds or prot differ
  std::vector<ImageMappingDifference> added;    // migratable process mappings the image lacks

  bool identical() const {
    return pages_changed == 0 && pages_unmapped == 0 && pages_unreadable == 0 && missing.empty() &&
           changed_mappings.empty() && added.empty();
  }
};

// The Result is an error when the comparison could not be made (the process
// is gone, the image unreadable); differences are in the comparison.
Result<ImageComparison> compare_image_with_process(const ImageReader& image, pid_t pid);

}  // namespace lm::engine

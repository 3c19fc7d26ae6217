// A memory image on disk: what `livemig dest --image --image-dir DIR` keeps
// of an unmodified process, and what `livemig image verify` compares with a
// live one. The format is described field by field in docs/image.md:
//
//   DIR/manifest.json  format, version, creation time, source pid, and per
//                      mapping: address, size, prot, its slice of the index
//   DIR/index.bin      sparse index, 16 bytes per data page, sorted by
//                      address: u64 page address, u64 offset in pages.bin
//   DIR/pages.bin      the pages that hold data, 4 KiB each; all-zero pages
//                      are not stored (they read as zero)
//
// The writer builds the image in a temporary sibling directory, fsyncs it
// and renames it into place, so DIR never holds half an image. The reader
// validates every size, offset and address it reads before using it.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/page.hpp"

namespace lm::engine {

// One region of a held image (the destination's memory, by source address).
struct ImageRegion {
  uint64_t addr = 0;  // source address
  uint64_t bytes = 0;
  uint32_t prot = 0;  // PROT_* of the source mapping
  const uint8_t* data = nullptr;  // valid while the Destination lives
};

inline constexpr const char* kImageFormat = "livemig-image";
inline constexpr unsigned kImageVersion = 1;
inline constexpr const char* kImageManifest = "manifest.json";
inline constexpr const char* kImageIndex = "index.bin";
inline constexpr const char* kImagePages = "pages.bin";

// One entry of index.bin, little-endian on disk (x86_64 native).
struct ImageIndexEntry {
  uint64_t addr;    // page address in the source
  uint64_t offset;  // byte offset of its 4 KiB in pages.bin
};
static_assert(sizeof(ImageIndexEntry) == 16);

struct ImageMapping {
  uint64_t addr = 0;
  uint64_t bytes = 0;
  uint32_t prot = 0;
  uint64_t first_entry = 0;  // its pages: index entries [first_entry, first_entry + entries)
  uint64_t entries = 0;

  PageRange range() const { return {addr, addr + bytes}; }
};

struct ImageManifest {
  unsigned version = kImageVersion;
  std::string created;  // UTC, ISO 8601
  std::optional<pid_t> source_pid;
  uint64_t index_entries = 0;
  uint64_t index_xxh3 = 0;
  uint64_t pages_bytes = 0;
  uint64_t pages_xxh3 = 0;
  std::vector<ImageMapping> mappings;  // sorted by address, disjoint
};

enum class ImageOverwrite { refuse, replace };

struct ImageWriteOptions {
  std::optional<pid_t> source_pid;
  // refuse: an existing non-empty DIR is an error; replace: it is swapped
  // out atomically and removed. An existing empty DIR is always taken.
  ImageOverwrite overwrite = ImageOverwrite::refuse;
};

struct ImageWriteStats {
  uint64_t mappings = 0;
  uint64_t pages = 0;       // pages of all mappings
  uint64_t data_pages = 0;  // of them stored (not all zero)
};

// Whether write_image_dir could install an image at `dir` now (checked
// before a migration, so that a run is not wasted on an unusable DIR).
Result<void> check_image_dir_target(const std::string& dir, ImageOverwrite overwrite);

Result<ImageWriteStats> write_image_dir(const std::string& dir, std::span<const ImageRegion> regions,
                                        const ImageWriteOptions& options);

// "rw-" style text of PROT_* bits, and back.
std::string prot_text(uint32_t prot);
Result<uint32_t> parse_prot_text(std::string_view text);

// Parses and validates a manifest's text (exposed for tests).
Result<ImageManifest> parse_image_manifest(std::string_view text);

class ImageReader {
 public:
  static Result<ImageReader> open(const std::string& dir);

  const ImageManifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // The mapping's index entries, sorted by address, each inside it.
  std::span<const ImageIndexEntry> entries(const ImageMapping& m) const;
  // Reads one stored page (`offset` from an index entry of this image).
  Result<void> read_page(uint64_t offset, std::span<std::byte, kPageSize> out) const;
  // Reads all of pages.bin and compares its XXH3 with the manifest's.
  Result<void> check_pages_checksum() const;

 private:
  ImageReader() = default;
  std::string dir_;
  ImageManifest manifest_;
  std::vector<ImageIndexEntry> index_;
  UniqueFd pages_;
};

}  // namespace lm::engine

// livemig image verify DIR --pid PID [--json]: compares an image that
// `livemig dest --image --image-dir DIR` wrote with a live or frozen process.
// livemig image show DIR [--json]: what the image holds.
// Exit 0: identical (verify) or shown; 1: they differ, or an error; 2: usage.
// The format is docs/image.md; the code is engine/image_dir.hpp.
#include <cstdio>
#include <memory>
#include <string>

#include "common/json.hpp"
#include "engine/image_dir.hpp"
#include "engine/image_verify.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"

namespace lm::cmd {

namespace {

using engine::ImageComparison;
using engine::ImageMappingDifference;
using engine::ImageReader;

std::string hex(uint64_t v) { return strf("0x%llx", (unsigned long long)v); }

void write_differences(JsonWriter& j, std::string_view key, const std::vector<ImageMappingDifference>& list) {
  j.begin_array(key);
  for (const auto& d : list)
    j.begin_object().field("address", hex(d.addr)).field("size", d.bytes).field("what", d.what).end_object();
  j.end_array();
}

std::string comparison_json(const std::string& dir, const ImageComparison& c) {
  JsonWriter j;
  j.begin_object()
      .field("image", dir)
      .field("pid", int64_t(c.pid))
      .field("identical", c.identical())
      .begin_object("pages")
      .field("image", c.image_pages)
      .field("compared", c.pages_compared)
      .field("equal", c.pages_equal)
      .field("changed", c.pages_changed)
      .field("unmapped", c.pages_unmapped)
      .field("unreadable", c.pages_unreadable);
  j.begin_array("changed-first");
  for (auto a : c.changed) j.value(hex(a));
  j.end_array();
  if (!c.unreadable_error.empty()) j.field("unreadable-error", c.unreadable_error);
  j.end_object().begin_object("mappings");
  write_differences(j, "missing", c.missing);
  write_differences(j, "changed", c.changed_mappings);
  write_differences(j, "added", c.added);
  j.end_object().end_object();
  return j.str() + "\n";
}

std::string list_differences(const char* title, const std::vector<ImageMappingDifference>& list) {
  std::string s;
  for (size_t i = 0; i < list.size() && i < ImageComparison::kListed; i++)
    s += strf("  %s [0x%llx,0x%llx): %s\n", title, (unsigned long long)list[i].addr,
              (unsigned long long)(list[i].addr + list[i].bytes), list[i].what.c_str());
  if (list.size() > ImageComparison::kListed) s += strf("  ... %zu %s mappings in all\n", list.size(), title);
  return s;
}

std::string comparison_text(const std::string& dir, const ImageComparison& c) {
  std::string s = strf("image %s against pid %d: %s\n", dir.c_str(), c.pid, c.identical() ? "identical" : "differs");
  s += strf("  pages: %llu in the image, %llu compared, %llu equal, %llu changed, %llu no longer mapped, "
            "%llu unreadable\n",
            (unsigned long long)c.image_pages, (unsigned long long)c.pages_compared,
            (unsigned long long)c.pages_equal, (unsigned long long)c.pages_changed,
            (unsigned long long)c.pages_unmapped, (unsigned long long)c.pages_unreadable);
  if (!c.changed.empty()) {
    s += "  first changed pages:";
    for (auto a : c.changed) s += " " + hex(a);
    s += "\n";
  }
  if (!c.unreadable_error.empty()) s += "  " + c.unreadable_error + "\n";
  s += list_differences("missing", c.missing) + list_differences("changed", c.changed_mappings) +
       list_differences("added", c.added);
  return s;
}

// The image, its pages file checked against the manifest's checksum.
Result<ImageReader> open_checked(const std::string& dir) {
  auto image = LM_TRY(ImageReader::open(dir));
  LM_TRY(image.check_pages_checksum());
  return image;
}

int verify(const std::string& dir, pid_t pid, bool json) {
  auto image = open_checked(dir);
  if (!image) {
    std::fprintf(stderr, "livemig image verify: %s\n", image.error().message.c_str());
    return 1;
  }
  auto c = engine::compare_image_with_process(*image, pid);
  if (!c) {
    std::fprintf(stderr, "livemig image verify: %s\n", c.error().message.c_str());
    return 1;
  }
  std::fputs((json ? comparison_json(dir, *c) : comparison_text(dir, *c)).c_str(), stdout);
  return c->identical() ? 0 : 1;
}

std::string show_json(const std::string& dir, const engine::ImageManifest& m) {
  JsonWriter j;
  j.begin_object().field("image", dir).field("version", uint64_t(m.version)).field("created", m.created);
  if (m.source_pid) j.field("source-pid", int64_t(*m.source_pid));
  else j.null_field("source-pid");
  j.field("stored-pages", m.index_entries).field("pages-bytes", m.pages_bytes).begin_array("mappings");
  for (const auto& x : m.mappings)
    j.begin_object()
        .field("address", hex(x.addr))
        .field("size", x.bytes)
        .field("prot", engine::prot_text(x.prot))
        .field("stored-pages", x.entries)
        .end_object();
  j.end_array().end_object();
  return j.str() + "\n";
}

std::string show_text(const std::string& dir, const engine::ImageManifest& m) {
  uint64_t bytes = 0;
  for (const auto& x : m.mappings) bytes += x.bytes;
  std::string s = strf("image %s (format version %u, created %s, source pid %s)\n", dir.c_str(), m.version,
                       m.created.c_str(), m.source_pid ? std::to_string(*m.source_pid).c_str() : "unknown");
  s += strf("  %zu mappings, %llu pages, %llu stored (%llu bytes in %s)\n", m.mappings.size(),
            (unsigned long long)(bytes / kPageSize), (unsigned long long)m.index_entries,
            (unsigned long long)m.pages_bytes, engine::kImagePages);
  for (const auto& x : m.mappings)
    s += strf("  [0x%llx,0x%llx) %s %llu stored\n", (unsigned long long)x.addr, (unsigned long long)(x.addr + x.bytes),
              engine::prot_text(x.prot).c_str(), (unsigned long long)x.entries);
  return s;
}

int show(const std::string& dir, bool json) {
  auto image = ImageReader::open(dir);
  if (!image) {
    std::fprintf(stderr, "livemig image show: %s\n", image.error().message.c_str());
    return 1;
  }
  std::fputs((json ? show_json(dir, image->manifest()) : show_text(dir, image->manifest())).c_str(), stdout);
  return 0;
}

struct ImageArgs {
  std::string dir;
  uint64_t pid = 0;
  bool json = false;
};

}  // namespace

Run image_verify(CLI::App& app) {
  auto a = std::make_shared<ImageArgs>();
  app.add_option("DIR", a->dir, "the image directory")->required();
  add_pid(app, a->pid, "the process to compare with (live or frozen)");
  app.add_flag("--json", a->json, "print a machine-readable report");
  return [a] { return verify(a->dir, pid_t(a->pid), a->json); };
}

Run image_show(CLI::App& app) {
  auto a = std::make_shared<ImageArgs>();
  app.add_option("DIR", a->dir, "the image directory")->required();
  app.add_flag("--json", a->json, "print the summary as JSON");
  return [a] { return show(a->dir, a->json); };
}

}  // namespace lm::cmd

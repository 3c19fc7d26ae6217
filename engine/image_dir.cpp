#include "engine/image_dir.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <climits>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <new>

#include <nlohmann/json.hpp>

#include "compress/uniform_scan.hpp"
#include "dirtytrack/tracker.hpp"

namespace lm::engine {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct FreeXxh3 {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};
using Xxh3State = std::unique_ptr<XXH3_state_t, FreeXxh3>;

Result<Xxh3State> new_xxh3(const std::string& what) {
  Xxh3State s(XXH3_createState());
  if (!s) return Error::msg(strf("%s: no memory for a hash state", what.c_str()));
  XXH3_64bits_reset(s.get());
  return s;
}

// --- writing --------------------------------------------------------------------

std::string utc_now_iso8601() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

std::string hex64(uint64_t v) { return strf("%016llx", (unsigned long long)v); }

Result<void> fsync_path(const std::string& path, int flags) {
  UniqueFd fd(open(path.c_str(), flags | O_CLOEXEC));
  if (!fd.valid()) return Error::from_errno(strf("open %s to fsync it", path.c_str()));
  if (fsync(fd.get()) != 0) return Error::from_errno(strf("fsync %s", path.c_str()));
  return ok();
}

// A new file written through a buffer, with a running XXH3 of its bytes.
class HashedFileWriter {
 public:
  static Result<HashedFileWriter> create(const std::string& path) {
    HashedFileWriter w;
    w.path_ = path;
    w.fd_.reset(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!w.fd_.valid()) return Error::from_errno(strf("create %s", path.c_str()));
    w.hash_ = LM_TRY(new_xxh3(path));
    w.buf_.reserve(kBuffer);
    return w;
  }
  Result<void> append(const void* data, size_t bytes) {
    XXH3_64bits_update(hash_.get(), data, bytes);
    const auto* p = static_cast<const uint8_t*>(data);
    buf_.insert(buf_.end(), p, p + bytes);
    written_ += bytes;
    return buf_.size() >= kBuffer ? flush() : ok();
  }
  // Writes what is buffered and fsyncs the file.
  Result<void> finish() {
    LM_TRY(flush());
    if (fsync(fd_.get()) != 0) return Error::from_errno(strf("fsync %s", path_.c_str()));
    return ok();
  }
  uint64_t bytes() const { return written_; }
  uint64_t digest() const { return XXH3_64bits_digest(hash_.get()); }

 private:
  static constexpr size_t kBuffer = 1 << 20;
  Result<void> flush() {
    size_t done = 0;
    while (done < buf_.size()) {
      ssize_t n = write(fd_.get(), buf_.data() + done, buf_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::from_errno(strf("write %s", path_.c_str()));
      done += size_t(n);
    }
    buf_.clear();
    return ok();
  }
  std::string path_;
  UniqueFd fd_;
  Xxh3State hash_;
  std::vector<uint8_t> buf_;
  uint64_t written_ = 0;
};

// Writes pages.bin and index.bin into `tmp`; fills the manifest's figures.
// The pages of a region's memory (in this process) that hold anything: an
// image of a process with a sparse reservation (an ASan build has ~14 TiB of
// shadow mapped) is not read page by page, which would build page tables for
// all of it. Where the kernel cannot tell (no PAGEMAP_SCAN), every page.
dt::RangeList present_pages(const ImageRegion& r) {
  dt::Mapping local;
  local.start = uint64_t(r.data);
  local.end = uint64_t(r.data) + r.bytes;
  local.read = local.write = true;
  auto present = dt::populated_pages(getpid(), {local});
  if (!present) return {{local.start, local.end}};
  return dt::intersect(*present, {{local.start, local.end}});
}

Result<ImageWriteStats> write_pages_and_index(const std::string& tmp, std::span<const ImageRegion> regions,
                                              ImageManifest& manifest) {
  ImageWriteStats stats;
  auto pages = LM_TRY(HashedFileWriter::create(tmp + "/" + kImagePages));
  auto index = LM_TRY(HashedFileWriter::create(tmp + "/" + kImageIndex));
  for (const auto& r : regions) {
    ImageMapping m{r.addr, r.bytes, r.prot, stats.data_pages, 0};
    stats.pages += r.bytes / kPageSize;
    for (const auto& present : present_pages(r)) {
      for (uint64_t off = present.start - uint64_t(r.data); off < present.end - uint64_t(r.data); off += kPageSize) {
        const uint8_t* page = r.data + off;
        if (compress::is_zero_page(page)) continue;
        ImageIndexEntry e{r.addr + off, pages.bytes()};
        LM_TRY(pages.append(page, kPageSize));
        LM_TRY(index.append(&e, sizeof e));
        m.entries++;
        stats.data_pages++;
      }
    }
    manifest.mappings.push_back(m);
    stats.mappings++;
  }
  LM_TRY(pages.finish());
  LM_TRY(index.finish());
  manifest.pages_bytes = pages.bytes();
  manifest.pages_xxh3 = pages.digest();
  manifest.index_entries = stats.data_pages;
  manifest.index_xxh3 = index.digest();
  return stats;
}

json manifest_json(const ImageManifest& m) {
  json mappings = json::array();
  for (const auto& x : m.mappings)
    mappings.push_back({{"address", x.addr},
                        {"size", x.bytes},
                        {"prot", prot_text(x.prot)},
                        {"index-first", x.first_entry},
                        {"index-entries", x.entries}});
  return {{"format", kImageFormat},
          {"version", m.version},
          {"created", m.created},
          {"source", {{"pid", m.source_pid ? json(*m.source_pid) : json(nullptr)}}},
          {"page-size", kPageSize},
          {"index", {{"file", kImageIndex}, {"entries", m.index_entries}, {"xxh3", hex64(m.index_xxh3)}}},
          {"pages", {{"file", kImagePages}, {"bytes", m.pages_bytes}, {"xxh3", hex64(m.pages_xxh3)}}},
          {"mappings", std::move(mappings)}};
}

Result<void> write_manifest(const std::string& tmp, const ImageManifest& manifest) {
  std::string text;
  try {
    text = manifest_json(manifest).dump(2) + "\n";
  } catch (const std::exception& e) {  // bad_alloc; dump's invalid-UTF-8 error cannot occur (ASCII only)
    return Error::msg(strf("build the image manifest: %s", e.what()));
  }
  auto file = LM_TRY(HashedFileWriter::create(tmp + "/" + kImageManifest));
  LM_TRY(file.append(text.data(), text.size()));
  return file.finish();
}

enum class DirState { absent, empty, full };

Result<DirState> dir_state(const std::string& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return DirState::absent;
    return Error::from_errno(strf("stat %s", dir.c_str()));
  }
  if (!S_ISDIR(st.st_mode)) return Error::msg(strf("%s exists and is not a directory", dir.c_str()));
  std::error_code ec;
  bool empty = fs::is_empty(dir, ec);
  if (ec) return Error::sys(ec.value(), strf("list %s", dir.c_str()));
  return empty ? DirState::empty : DirState::full;
}

// Removes the temporary directory unless the image was installed.
struct TempDirGuard {
  std::string path;
  ~TempDirGuard() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

// Puts the finished temporary directory at `dir`. A plain rename fails if
// `dir` has gained content meanwhile; `replace` exchanges the two
// directories atomically and removes the old image.
Result<void> install(const std::string& tmp, const std::string& dir, DirState state, ImageOverwrite overwrite,
                     TempDirGuard& guard) {
  if (state == DirState::full && overwrite == ImageOverwrite::replace) {
    if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0)
      return Error::from_errno(strf("exchange %s with the new image %s", dir.c_str(), tmp.c_str()));
    // guard.path (tmp) now names the old image, removed by the guard.
  } else {
    if (rename(tmp.c_str(), dir.c_str()) != 0)
      return Error::from_errno(strf("rename the new image %s to %s", tmp.c_str(), dir.c_str()));
    guard.path.clear();
  }
  return ok();
}

}  // namespace

std::string prot_text(uint32_t prot) {
  std::string s = "---";
  if (prot & PROT_READ) s[0] = 'r';
  if (prot & PROT_WRITE) s[1] = 'w';
  if (prot & PROT_EXEC) s[2] = 'x';
  return s;
}

Result<uint32_t> parse_prot_text(std::string_view text) {
  static constexpr char kLetters[] = {'r', 'w', 'x'};
  static constexpr uint32_t kBits[] = {PROT_READ, PROT_WRITE, PROT_EXEC};
  if (text.size() != 3) return Error::msg(strf("prot '%.*s': expected three letters like 'rw-'", int(text.size()), text.data()));
  uint32_t prot = 0;
  for (size_t i = 0; i < 3; i++) {
    if (text[i] == kLetters[i]) prot |= kBits[i];
    else if (text[i] != '-')
      return Error::msg(strf("prot '%.*s': expected three letters like 'rw-'", int(text.size()), text.data()));
  }
  return prot;
}

namespace {

// The image directory's path without a trailing slash; "", ".", "/" are refused.
Result<fs::path> image_dir_path(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  if (p.empty() || p == "." || p == "/" || p.filename() == "..")
    return Error::msg(strf("image directory '%s': name a directory to create", dir.c_str()));
  return p;
}

Result<DirState> usable_dir_state(const fs::path& dir, ImageOverwrite overwrite) {
  const DirState state = LM_TRY(dir_state(dir.string()));
  if (state == DirState::full && overwrite == ImageOverwrite::refuse)
    return Error::msg(strf("%s exists and is not empty (--force replaces it)", dir.c_str()));
  return state;
}

}  // namespace

Result<void> check_image_dir_target(const std::string& dir, ImageOverwrite overwrite) {
  LM_TRY(usable_dir_state(LM_TRY(image_dir_path(dir)), overwrite));
  return ok();
}

Result<ImageWriteStats> write_image_dir(const std::string& dir_arg, std::span<const ImageRegion> regions,
                                        const ImageWriteOptions& options) {
  const fs::path dir_path = LM_TRY(image_dir_path(dir_arg));
  const std::string dir = dir_path.string();
  for (const auto& r : regions)
    if ((r.addr | r.bytes) & (kPageSize - 1) || r.bytes == 0 || !r.data)
      return Error::msg(strf("image region 0x%llx+%llu is empty or not page aligned", (unsigned long long)r.addr,
                             (unsigned long long)r.bytes));
  const DirState state = LM_TRY(usable_dir_state(dir_path, options.overwrite));

  fs::path parent = dir_path.parent_path().empty() ? fs::path(".") : dir_path.parent_path();
  std::string tmpl = (parent / ("." + dir_path.filename().string() + ".tmp-XXXXXX")).string();
  if (!mkdtemp(tmpl.data())) return Error::from_errno(strf("create a temporary image directory in %s", parent.c_str()));
  TempDirGuard guard{tmpl};

  ImageManifest manifest;
  manifest.created = utc_now_iso8601();
  manifest.source_pid = options.source_pid;
  auto stats = LM_TRY_CTX(write_pages_and_index(tmpl, regions, manifest), strf("write image %s", dir.c_str()));
  LM_TRY_CTX(write_manifest(tmpl, manifest), strf("write image %s", dir.c_str()));
  LM_TRY(fsync_path(tmpl, O_RDONLY | O_DIRECTORY));
  LM_TRY(install(tmpl, dir, state, options.overwrite, guard));
  LM_TRY(fsync_path(parent.string(), O_RDONLY | O_DIRECTORY));
  return stats;
}

}  // namespace lm::engine

// --- reading --------------------------------------------------------------------

namespace lm::engine {

namespace {

// Typed access to a manifest's fields; a wrong or missing one is an error
// naming it ("mappings[3].size").
struct Fields {
  const json& obj;
  std::string where;

  Result<const json*> get(const char* key, json::value_t type) const {
    auto it = obj.find(key);
    const char* type_name = json(type).type_name();
    if (it == obj.end()) return Error::msg(strf("%s%s is missing", where.c_str(), key));
    bool ok_type = it->type() == type || (type == json::value_t::number_unsigned && it->is_number_unsigned());
    if (!ok_type)
      return Error::msg(strf("%s%s is %s, expected %s", where.c_str(), key, it->type_name(),
                             type == json::value_t::number_unsigned ? "an unsigned integer" : type_name));
    return &*it;
  }
  Result<uint64_t> u64(const char* key) const { return LM_TRY(get(key, json::value_t::number_unsigned))->get<uint64_t>(); }
  Result<std::string> str(const char* key) const { return LM_TRY(get(key, json::value_t::string))->get<std::string>(); }
  Result<Fields> object(const char* key) const {
    return Fields{*LM_TRY(get(key, json::value_t::object)), where + key + "."};
  }
  Result<void> expect(const char* key, std::string_view want) const {
    auto v = LM_TRY(str(key));
    if (v != want) return Error::msg(strf("%s%s is '%s', expected '%.*s'", where.c_str(), key, v.c_str(), int(want.size()), want.data()));
    return ok();
  }
  Result<uint64_t> hex64(const char* key) const {
    auto v = LM_TRY(str(key));
    auto parsed = v.size() == 16 && v.find_first_not_of("0123456789abcdef") == std::string::npos
                      ? std::optional<uint64_t>(std::strtoull(v.c_str(), nullptr, 16))
                      : std::nullopt;
    if (!parsed) return Error::msg(strf("%s%s '%s' is not 16 hex digits", where.c_str(), key, v.c_str()));
    return *parsed;
  }
};

Result<ImageMapping> parse_mapping(const json& j, size_t i, uint64_t next_entry) {
  std::string where = strf("mappings[%zu].", i);
  if (!j.is_object()) return Error::msg(strf("mappings[%zu] is %s, expected an object", i, j.type_name()));
  Fields f{j, where};
  ImageMapping m;
  m.addr = LM_TRY(f.u64("address"));
  m.bytes = LM_TRY(f.u64("size"));
  m.prot = LM_TRY_CTX(parse_prot_text(LM_TRY(f.str("prot"))), where + "prot");
  m.first_entry = LM_TRY(f.u64("index-first"));
  m.entries = LM_TRY(f.u64("index-entries"));
  if ((m.addr | m.bytes) & (kPageSize - 1) || m.bytes == 0 || m.addr + m.bytes < m.addr)
    return Error::msg(strf("%saddress 0x%llx size %llu: empty, unaligned or past the end of the address space",
                           where.c_str(), (unsigned long long)m.addr, (unsigned long long)m.bytes));
  if (m.first_entry != next_entry)
    return Error::msg(strf("%sindex-first is %llu, expected %llu (slices follow each other)", where.c_str(),
                           (unsigned long long)m.first_entry, (unsigned long long)next_entry));
  if (m.entries > m.bytes / kPageSize)
    return Error::msg(strf("%sindex-entries %llu exceeds its %llu pages", where.c_str(),
                           (unsigned long long)m.entries, (unsigned long long)(m.bytes / kPageSize)));
  return m;
}

Result<ImageManifest> parse_manifest_json(const json& doc) {
  if (!doc.is_object()) return Error::msg(strf("the manifest is %s, expected an object", doc.type_name()));
  Fields top{doc, ""};
  LM_TRY(top.expect("format", kImageFormat));
  ImageManifest m;
  uint64_t version = LM_TRY(top.u64("version"));
  if (version != kImageVersion)
    return Error::msg(strf("format version %llu; this livemig reads version %u", (unsigned long long)version, kImageVersion));
  m.created = LM_TRY(top.str("created"));
  auto source = LM_TRY(top.object("source"));
  if (auto pid = source.obj.find("pid"); pid == source.obj.end() || !pid->is_null()) {
    uint64_t p = LM_TRY(source.u64("pid"));
    if (p == 0 || p > uint64_t(INT_MAX)) return Error::msg(strf("source.pid %llu is not a pid", (unsigned long long)p));
    m.source_pid = pid_t(p);
  }
  if (uint64_t ps = LM_TRY(top.u64("page-size")); ps != kPageSize)
    return Error::msg(strf("page-size %llu; this livemig reads %zu", (unsigned long long)ps, kPageSize));
  auto index = LM_TRY(top.object("index"));
  LM_TRY(index.expect("file", kImageIndex));
  m.index_entries = LM_TRY(index.u64("entries"));
  m.index_xxh3 = LM_TRY(index.hex64("xxh3"));
  auto pages = LM_TRY(top.object("pages"));
  LM_TRY(pages.expect("file", kImagePages));
  m.pages_bytes = LM_TRY(pages.u64("bytes"));
  m.pages_xxh3 = LM_TRY(pages.hex64("xxh3"));
  if (m.pages_bytes % kPageSize)
    return Error::msg(strf("pages.bytes %llu is not a whole number of pages", (unsigned long long)m.pages_bytes));
  const json& mappings = *LM_TRY(top.get("mappings", json::value_t::array));
  uint64_t next_entry = 0;
  for (size_t i = 0; i < mappings.size(); i++) {
    auto mapping = LM_TRY(parse_mapping(mappings[i], i, next_entry));
    if (!m.mappings.empty() && m.mappings.back().addr + m.mappings.back().bytes > mapping.addr)
      return Error::msg(strf("mappings[%zu] at 0x%llx overlaps or precedes the one before", i,
                             (unsigned long long)mapping.addr));
    next_entry += mapping.entries;
    m.mappings.push_back(mapping);
  }
  if (next_entry != m.index_entries)
    return Error::msg(strf("the mappings' slices hold %llu index entries, index.entries says %llu",
                           (unsigned long long)next_entry, (unsigned long long)m.index_entries));
  return m;
}

Result<std::string> read_small_file(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::from_errno(strf("open %s", path.c_str()));
  std::string text;
  char buf[65536];
  while (true) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno(strf("read %s", path.c_str()));
    if (n == 0) return text;
    text.append(buf, size_t(n));
    if (text.size() > max_bytes) return Error::msg(strf("%s is larger than %zu bytes", path.c_str(), max_bytes));
  }
}

Result<uint64_t> file_size(int fd, const std::string& path) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return Error::from_errno(strf("stat %s", path.c_str()));
  return uint64_t(st.st_size);
}

// Reads exactly `bytes` at `offset`; a short file is an error.
Result<void> pread_exact(int fd, void* out, size_t bytes, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(out);
  for (size_t done = 0; done < bytes;) {
    ssize_t n = pread(fd, p + done, bytes - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno(strf("read %s at offset %llu", path.c_str(), (unsigned long long)(offset + done)));
    if (n == 0) return Error::msg(strf("%s ends before offset %llu", path.c_str(), (unsigned long long)(offset + done)));
    done += size_t(n);
  }
  return ok();
}

// Reads index.bin and checks it against the manifest: its size and XXH3,
// and every entry: sorted, page aligned, inside its mapping, its offset a
// whole page inside pages.bin.
Result<std::vector<ImageIndexEntry>> read_index(const std::string& path, const ImageManifest& m) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::from_errno(strf("open %s", path.c_str()));
  uint64_t size = LM_TRY(file_size(fd.get(), path));
  if (size / sizeof(ImageIndexEntry) != m.index_entries || size % sizeof(ImageIndexEntry))
    return Error::msg(strf("%s holds %llu bytes; the manifest's %llu entries need %llu", path.c_str(),
                           (unsigned long long)size, (unsigned long long)m.index_entries,
                           (unsigned long long)(m.index_entries * sizeof(ImageIndexEntry))));
  std::vector<ImageIndexEntry> index(m.index_entries);
  LM_TRY(pread_exact(fd.get(), index.data(), size, 0, path));
  if (XXH3_64bits(index.data(), size) != m.index_xxh3)
    return Error::msg(strf("%s: checksum differs from the manifest's", path.c_str()));
  for (const auto& mapping : m.mappings) {
    for (uint64_t i = mapping.first_entry; i < mapping.first_entry + mapping.entries; i++) {
      const auto& e = index[i];
      auto bad = [&](const char* why) {
        return Error::msg(strf("%s entry %llu (page 0x%llx, offset %llu): %s", path.c_str(), (unsigned long long)i,
                               (unsigned long long)e.addr, (unsigned long long)e.offset, why));
      };
      if (e.addr & (kPageSize - 1)) return bad("address not page aligned");
      if (!mapping.range().contains(e.addr)) return bad("address outside its mapping");
      if (i > mapping.first_entry && index[i - 1].addr >= e.addr) return bad("addresses not strictly ascending");
      if (e.offset % kPageSize || m.pages_bytes < kPageSize || e.offset > m.pages_bytes - kPageSize)
        return bad("offset not a whole page inside pages.bin");
    }
  }
  return index;
}

}  // namespace

Result<ImageManifest> parse_image_manifest(std::string_view text) {
  try {
    json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return Error::msg("the manifest is not valid JSON");
    return parse_manifest_json(doc);
  } catch (const std::exception& e) {  // bad_alloc; parse itself reports errors by value
    return Error::msg(strf("read the manifest: %s", e.what()));
  }
}

Result<ImageReader> ImageReader::open(const std::string& dir) {
  ImageReader r;
  r.dir_ = dir;
  const std::string manifest_path = dir + "/" + kImageManifest;
  auto text = LM_TRY(read_small_file(manifest_path, 256u << 20));
  r.manifest_ = LM_TRY_CTX(parse_image_manifest(text), manifest_path);
  r.index_ = LM_TRY(read_index(dir + "/" + kImageIndex, r.manifest_));
  const std::string pages_path = dir + "/" + kImagePages;
  r.pages_.reset(::open(pages_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!r.pages_.valid()) return Error::from_errno(strf("open %s", pages_path.c_str()));
  uint64_t size = LM_TRY(file_size(r.pages_.get(), pages_path));
  if (size != r.manifest_.pages_bytes)
    return Error::msg(strf("%s holds %llu bytes, the manifest says %llu", pages_path.c_str(), (unsigned long long)size,
                           (unsigned long long)r.manifest_.pages_bytes));
  return r;
}

std::span<const ImageIndexEntry> ImageReader::entries(const ImageMapping& m) const {
  return std::span<const ImageIndexEntry>(index_).subspan(m.first_entry, m.entries);
}

Result<void> ImageReader::read_page(uint64_t offset, std::span<std::byte, kPageSize> out) const {
  if (offset % kPageSize || manifest_.pages_bytes < kPageSize || offset > manifest_.pages_bytes - kPageSize)
    return Error::msg(strf("%s/%s: offset %llu is not a page inside the file", dir_.c_str(), kImagePages,
                           (unsigned long long)offset));
  return pread_exact(pages_.get(), out.data(), kPageSize, offset, dir_ + "/" + kImagePages);
}

Result<void> ImageReader::check_pages_checksum() const {
  auto state = LM_TRY(new_xxh3(dir_ + "/" + kImagePages));
  std::vector<char> buf(1 << 20);
  for (uint64_t done = 0; done < manifest_.pages_bytes;) {
    size_t n = size_t(std::min<uint64_t>(buf.size(), manifest_.pages_bytes - done));
    LM_TRY(pread_exact(pages_.get(), buf.data(), n, done, dir_ + "/" + kImagePages));
    XXH3_64bits_update(state.get(), buf.data(), n);
    done += n;
  }
  if (XXH3_64bits_digest(state.get()) != manifest_.pages_xxh3)
    return Error::msg(strf("%s/%s: checksum differs from the manifest's", dir_.c_str(), kImagePages));
  return ok();
}

}  // namespace lm::engine

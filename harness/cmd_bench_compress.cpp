// livemig bench compress: codecs and policies on page corpora.
//
// With no arguments it builds its default corpora (synthetic classes and a
// mixed corpus, plus real programs captured with `livemig snapshot` when that
// works here), runs the tables below, prints them and writes
// results/bench_compress.json:
//   1. per codec and per page class: compress / decompress MB/s on one core
//      and ratio;
//   2. classifier cost against LZ4 on the same pages;
//   3. per policy and corpus: the effective page throughput at emulated link
//      rates and worker counts, delivered = min(workers x CPU rate,
//      link x ratio), and the targets (adaptive against the best fixed
//      policy).
// CPU rates are medians of --repeat runs of thread CPU time on one core; two
// workers are modelled as twice one core (the machine is shared, so a
// measured parallel rate would mostly measure the neighbours).
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/subprocess.hpp"
#include "compress/classifier.hpp"
#include "compress/compressor.hpp"
#include "compress/corpus.hpp"
#include "compress/cycle_clock.hpp"
#include "compress/synthetic.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"
#include "harness/guest/content.hpp"

namespace lm::cmd {
namespace {

using namespace lm::compress;

uint64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

Corpus synthetic_corpus(Content c, size_t pages, uint64_t seed) {
  Corpus corpus;
  corpus.name = std::string(content_name(c));
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < pages; i++) {
    fill_page(c, rng, page.data());
    corpus.add(0x10000000000ull + i * kPageSize, page.data());
  }
  return corpus;
}

// The synthetic guest's content profiles (its own generator, as the guest
// writes them), first version of every page.
Corpus guest_corpus(guest::ContentProfile profile, size_t pages, uint64_t seed) {
  Corpus corpus;
  corpus.name = "guest-" + std::string(guest::content_profile_name(profile));
  std::vector<uint8_t> page(kPageSize);
  for (size_t i = 0; i < pages; i++) {
    guest::fill_page(page.data(), profile, guest::WriteMode::page, seed, i, 1);
    corpus.add(0x20000000000ull + i * kPageSize, page.data());
  }
  return corpus;
}

// ---- real programs, captured through `livemig snapshot` ----

// Output discarded; it dies with this thread if the bench is killed.
Result<Subprocess> start_quiet(const std::vector<std::string>& argv) {
  SpawnOptions options;
  options.stdout_to = options.stderr_to = Stdio::null;
  options.on_parent_exit = ParentExit::die;
  return Subprocess::spawn(argv, options);
}

// Runs a command to completion with a timeout; true when it exits 0.
bool run_command(const std::vector<std::string>& argv, int timeout_s) {
  auto child = start_quiet(argv);
  if (!child) return false;
  auto status = child->wait_or_kill(timeout_s * 1000);
  return status && status->success();
}

bool have_program(const char* name) { return find_program(name).ok(); }

Result<Corpus> snapshot_pid(pid_t pid, const std::string& name, const std::string& dir) {
  std::string path = dir + "/" + name + ".corpus";
  // /proc/self/exe execs this very binary even if a rebuild replaced it.
  const std::string exe = "/proc/self/exe";
  if (!run_command({exe, "snapshot", "--pid", std::to_string(pid), "--out", path}, 120))
    return Error::msg(strf("livemig snapshot --pid %d failed", pid));
  auto c = LM_TRY(read_corpus(path));
  c.name = name;
  unlink(path.c_str());
  return c;
}

// A loaded redis-server on a loopback port of our own, a python3 process
// with a large heap, and a compiler mid-run. Each is started here, captured,
// and killed by its PID.
std::vector<Corpus> real_corpora(size_t max_pages, std::vector<std::string>& notes) {
  std::vector<Corpus> out;
  std::string dir = "results/corpora";
  std::system("mkdir -p results/corpora");
  auto keep = [&](Result<Corpus> c, const char* what) {
    if (!c) {
      notes.push_back(strf("%s: %s", what, c.error().message.c_str()));
      return;
    }
    // Cap the size: sample evenly so a big heap does not dominate the run.
    if (c->pages() > max_pages) {
      Corpus s;
      s.name = c->name;
      s.pid = c->pid;
      for (size_t i = 0; i < max_pages; i++) {
        size_t k = i * c->pages() / max_pages;
        s.add(c->addrs[k], c->page(k));
      }
      out.push_back(std::move(s));
    } else {
      out.push_back(std::move(*c));
    }
  };
  if (have_program("redis-server") && have_program("redis-benchmark")) {
    int port = 20000 + int(getpid() % 20000);
    auto redis = start_quiet({"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"});
    if (redis) {
      usleep(300000);
      bool loaded = run_command({"redis-benchmark", "-h", "127.0.0.1", "-p", std::to_string(port), "-n", "200000",
                                 "-r", "100000", "-d", "200", "-t", "set,lpush,hset", "-q"},
                                120);
      if (!loaded) notes.push_back("redis-benchmark did not finish; the redis corpus is a partly loaded server");
    }
    keep(redis ? snapshot_pid(redis->pid(), "redis", dir) : Result<Corpus>(redis.error()), "redis-server");
  } else {
    notes.push_back("redis-server/redis-benchmark not installed: no redis corpus");
  }
  if (have_program("python3")) {
    auto py = start_quiet({"python3", "-c",
                           "import random,time\n"
                           "random.seed(1)\n"
                           "d={i:(str(i)*3, i*1.5, [i,i+1]) for i in range(300000)}\n"
                           "s=[''.join(random.choice('abcdefghij ') for _ in range(40)) for _ in range(20000)]\n"
                           "print('ready',flush=True)\n"
                           "time.sleep(600)\n"});
    if (py) sleep(6);
    keep(py ? snapshot_pid(py->pid(), "python3", dir) : Result<Corpus>(py.error()), "python3");
  }
  if (have_program("g++")) {
    // Compile this very command's source, and capture cc1plus mid-run.
    std::string src = dir + "/compiler_input.cpp";
    {
      std::ofstream f(src);
      f << "#include <map>\n#include <regex>\n#include <string>\n#include <vector>\n#include <iostream>\n"
           "int main(){std::map<std::string,std::vector<int>> m; std::regex r(\"a+b*\");"
           "for(auto& [k,v]:m) std::cout<<k<<v.size(); return std::regex_match(\"aab\",r);}\n";
    }
    auto cc = start_quiet({"g++", "-O2", "-std=c++20", "-c", src, "-o", "/dev/null"});
    // cc1plus is g++'s child: find it once it has grown.
    pid_t target = -1;
    for (int i = 0; cc && i < 40 && target < 0; i++) {
      usleep(100000);
      std::string cmd = strf("pgrep -P %d cc1plus", cc->pid());
      FILE* p = popen(cmd.c_str(), "r");
      int v = 0;
      if (p && fscanf(p, "%d", &v) == 1 && i >= 8) target = v;
      if (p) pclose(p);
    }
    if (!cc) notes.push_back("g++: " + cc.error().message);
    else if (target > 0) keep(snapshot_pid(target, "compiler", dir), "cc1plus");
    else notes.push_back("could not find cc1plus under g++: no compiler corpus");
    if (cc) (void)cc->kill_and_wait();
    unlink(src.c_str());
  }
  return out;
}

// ---- table 1: codecs per class ----

struct CodecRow {
  std::string cls, codec;
  size_t pages = 0;
  double compress_mbps = 0, decompress_mbps = 0, ratio = 0;
};

CodecRow measure_codec(const CodecChoice& choice, const std::vector<const uint8_t*>& pages,
                       const std::vector<const uint8_t*>& previous, unsigned repeat) {
  CodecRow row;
  row.pages = pages.size();
  if (pages.empty()) return row;
  CodecContext ctx;
  std::vector<uint8_t> payload(pages.size() * kPageSize);
  std::vector<uint32_t> len(pages.size());
  std::vector<Codec> sent(pages.size());
  std::vector<double> c_ns, d_ns;
  uint64_t out_bytes = 0;
  for (unsigned r = 0; r < repeat; r++) {
    out_bytes = 0;
    uint64_t t0 = thread_cpu_ns();
    for (size_t i = 0; i < pages.size(); i++) {
      uint8_t* dst = payload.data() + i * kPageSize;
      size_t n = encode_page(choice.codec, choice.params, ctx, pages[i], previous[i], dst, kPageSize - 64);
      sent[i] = choice.codec;
      if (n == kDoesNotFit) {
        n = raw::encode(pages[i], dst, kPageSize);
        sent[i] = Codec::raw;
      }
      len[i] = uint32_t(n);
      out_bytes += n + sizeof(PageEntry);
    }
    c_ns.push_back(double(thread_cpu_ns() - t0));
  }
  std::vector<uint8_t> dst(pages.size() * kPageSize);
  for (unsigned r = 0; r < repeat; r++) {
    if (choice.codec == Codec::delta)
      for (size_t i = 0; i < pages.size(); i++) std::memcpy(&dst[i * kPageSize], previous[i], kPageSize);
    uint64_t t0 = thread_cpu_ns();
    for (size_t i = 0; i < pages.size(); i++) {
      auto ok = decode_page(sent[i], ctx, {payload.data() + i * kPageSize, len[i]}, &dst[i * kPageSize]);
      if (!ok) std::fprintf(stderr, "livemig: bench: %s\n", ok.error().message.c_str());
    }
    d_ns.push_back(double(thread_cpu_ns() - t0));
  }
  for (size_t i = 0; i < pages.size(); i++)
    if (std::memcmp(&dst[i * kPageSize], pages[i], kPageSize) != 0) {
      std::fprintf(stderr, "livemig: bench: %s round trip differs on page %zu\n",
                   codec_choice_name(choice).c_str(), i);
      break;
    }
  double bytes = double(pages.size() * kPageSize);
  row.compress_mbps = bytes / median(c_ns) * 1e3;
  row.decompress_mbps = bytes / median(d_ns) * 1e3;
  row.ratio = bytes / double(out_bytes);
  return row;
}

// ---- table 3: policies ----

// One compressor measured on one corpus: a fixed policy, or the adaptive
// policy told one link rate and worker count.
struct PolicyCase {
  std::string policy;
  double link_bytes_per_s = 0;  // adaptive only
  unsigned workers = 1;         // adaptive only
  std::unique_ptr<Compressor> compressor;
  std::vector<double> pass_ns;
  uint64_t wire = 0;  // bytes on the wire for one pass (entries + payloads)
  unsigned passes = 0;
  double cpu_bytes_per_s = 0;  // page bytes compressed per second of one core
  double ratio = 0;            // page bytes / wire bytes
};

// One pass over the corpus, in batches, at fresh addresses (a first send).
Result<void> run_pass(PolicyCase& pc, const Corpus& corpus, unsigned batch, bool timed) {
  std::vector<const uint8_t*> ptrs(corpus.pages());
  std::vector<uint64_t> addrs(corpus.pages());
  pc.passes++;
  for (size_t i = 0; i < ptrs.size(); i++) {
    ptrs[i] = corpus.page(i);
    addrs[i] = (uint64_t(pc.passes + 1) << 40) + i * kPageSize;
  }
  CompressedBatch out;
  uint64_t wire = 0;
  uint64_t t0 = thread_cpu_ns();
  for (size_t at = 0; at < ptrs.size(); at += batch) {
    size_t n = std::min<size_t>(batch, ptrs.size() - at);
    LM_TRY(pc.compressor->compress_batch({addrs.data() + at, n}, {ptrs.data() + at, n}, out));
    wire += out.wire_bytes();
  }
  if (timed) {
    pc.pass_ns.push_back(double(thread_cpu_ns() - t0));
    pc.wire = wire;
  }
  return ok();
}

// Measures every case on the corpus: one untimed pass each (the adaptive
// policy learns on it), then `repeat` timed rounds in which every case runs
// one pass, so that the noise of a shared machine hits all cases alike.
Result<void> measure_cases(std::vector<PolicyCase>& cases, const Corpus& corpus, unsigned batch, unsigned repeat) {
  for (auto& pc : cases) {
    LM_TRY(run_pass(pc, corpus, batch, false));
    pc.compressor->reset_stats();
  }
  for (unsigned r = 0; r < repeat; r++)
    for (auto& pc : cases) LM_TRY(run_pass(pc, corpus, batch, true));
  double bytes = double(corpus.pages() * kPageSize);
  for (auto& pc : cases) {
    pc.cpu_bytes_per_s = bytes / median(pc.pass_ns) * 1e9;
    pc.ratio = bytes / double(pc.wire);
  }
  return ok();
}

double delivered(const PolicyCase& r, double link_bytes_per_s, unsigned workers) {
  return std::min(r.cpu_bytes_per_s * workers, link_bytes_per_s * r.ratio);
}

std::string host_json_fields(JsonWriter& w) {
  utsname u{};
  uname(&u);
  w.begin_object("host").field("kernel", u.release).field("machine", u.machine);
  w.field("cpus", int64_t(sysconf(_SC_NPROCESSORS_ONLN)));
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model;
  while (std::getline(cpuinfo, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  w.field("cpu", model).end_object();
  return model;
}


// ---- the command ----

struct BenchArgs {
  std::vector<std::string> corpus_files;
  std::vector<std::string> corpora{"words", "text", "random", "mixed", "guest-ints", "guest-text", "guest-mixed"};
  bool no_real = false;
  uint64_t pages = 0;   // 0: 4096, or 1024 with --quick
  uint64_t repeat = 0;  // 0: 5, or 1 with --quick
  uint64_t batch = 64;
  std::vector<std::string> codecs{"raw", "lz4", "lz4:8", "zstd:1", "zstd:3", "wkdm", "delta"};
  std::vector<std::string> policies{"fixed:raw", "fixed:lz4", "fixed:lz4:8", "fixed:zstd:1", "fixed:zstd:3",
                                    "fixed:wkdm", "cbc", "adaptive"};
  std::vector<double> links{1, 10, 25, 100};  // Gbit/s
  std::vector<unsigned> workers{1, 2};
  std::string json = "results/bench_compress.json";
  bool quick = false;
  const CLI::Option* corpora_option = nullptr;  // given: no real programs either
};

// The synthetic and guest corpora named, the corpus files, and real
// programs unless corpora were named or --no-real.
Result<std::vector<Corpus>> build_corpora(const BenchArgs& a, uint64_t pages, std::vector<std::string>& notes) {
  std::vector<Corpus> corpora;
  for (auto& name : a.corpora) {
    if (name.rfind("guest-", 0) == 0) {
      auto p = LM_TRY(guest::parse_content_profile(name.substr(6)));
      corpora.push_back(guest_corpus(p, pages, 1 + corpora.size()));
      continue;
    }
    auto c = LM_TRY(parse_content(name));
    corpora.push_back(synthetic_corpus(c, pages, 1 + corpora.size()));
  }
  for (auto& f : a.corpus_files) {
    auto c = LM_TRY(read_corpus(f));
    if (c.name.empty()) c.name = f;
    corpora.push_back(std::move(c));
  }
  if (!a.no_real && a.corpus_files.empty() && a.corpora_option->count() == 0)
    for (auto& c : real_corpora(pages * 4, notes)) corpora.push_back(std::move(c));
  return corpora;
}

void corpora_json(JsonWriter& json, const std::vector<Corpus>& corpora) {
  json.begin_array("corpora");
  for (auto& c : corpora) {
    std::array<size_t, kClassCount> n{};
    for (size_t i = 0; i < c.pages(); i++) n[unsigned(classify(c.page(i)).cls)]++;
    json.begin_object().field("name", c.name).field("pages", uint64_t(c.pages())).field("pid", c.pid);
    json.begin_object("classes");
    for (unsigned k = 0; k < 5; k++) json.field(class_name(PageClass(k)), uint64_t(n[k]));
    json.end_object().end_object();
    std::printf("corpus %-10s %6zu pages: zero %zu uniform %zu words %zu text %zu random %zu\n", c.name.c_str(),
                c.pages(), n[0], n[1], n[2], n[3], n[4]);
  }
  json.end_array();
}

// ---- table 1 ----

// The pages of the corpora by class, at most 8192 a class (evenly over the
// corpora): enough for a rate, and the codec table's buffers stay small.
std::map<unsigned, std::vector<const uint8_t*>> pages_by_class(const std::vector<Corpus>& corpora) {
  std::map<unsigned, std::vector<const uint8_t*>> by_class;
  for (auto& c : corpora)
    for (size_t i = 0; i < c.pages(); i++) by_class[unsigned(classify(c.page(i)).cls)].push_back(c.page(i));
  for (auto& [k, v] : by_class)
    if (v.size() > 8192) {
      std::vector<const uint8_t*> kept;
      for (size_t i = 0; i < 8192; i++) kept.push_back(v[i * v.size() / 8192]);
      v = std::move(kept);
    }
  return by_class;
}

// Re-sent pages: the mixed and text pages with 8 words changed since the
// previous version; only here does delta have a previous version.
struct ResentPages {
  std::vector<std::vector<uint8_t>> store;
  std::vector<const uint8_t*> pages, previous;
};

void make_resent(std::map<unsigned, std::vector<const uint8_t*>>& by_class, ResentPages& r) {
  std::mt19937_64 rng(77);
  for (unsigned k : {unsigned(PageClass::words), unsigned(PageClass::text)}) {
    size_t n = std::min<size_t>(by_class[k].size(), 2048);
    for (size_t i = 0; i < n; i++) {
      r.previous.push_back(by_class[k][i]);
      r.store.emplace_back(by_class[k][i], by_class[k][i] + kPageSize);
      mutate_page(rng, r.store.back().data(), 8);
    }
  }
  for (auto& page : r.store) r.pages.push_back(page.data());
}

std::vector<CodecRow> codec_table(const std::vector<Corpus>& corpora, const std::vector<CodecChoice>& codecs,
                                  unsigned repeat, JsonWriter& json) {
  auto by_class = pages_by_class(corpora);
  ResentPages resent_set;
  make_resent(by_class, resent_set);
  std::printf("\n== codecs per class: MB/s on one core (compress / decompress), ratio (wire incl. 16-byte entry) ==\n");
  std::printf("%-8s %-8s %7s %10s %10s %7s\n", "class", "codec", "pages", "comp MB/s", "decomp MB/s", "ratio");
  std::vector<CodecRow> rows;
  for (unsigned k = 0; k <= kClassCount - 1; k++) {
    bool resent = k == unsigned(PageClass::resent);
    const auto& pages_k = resent ? resent_set.pages : by_class[k];
    if (pages_k.empty()) continue;
    std::vector<const uint8_t*> prev =
        resent ? resent_set.previous : std::vector<const uint8_t*>(pages_k.size(), nullptr);
    std::vector<CodecChoice> list = codecs;
    if (k == unsigned(PageClass::zero)) list.insert(list.begin(), CodecChoice{Codec::zero, {}});
    if (k == unsigned(PageClass::uniform)) list.insert(list.begin(), CodecChoice{Codec::uniform, {}});
    for (auto& choice : list) {
      if (choice.codec == Codec::delta && !resent) continue;
      CodecRow row = measure_codec(choice, pages_k, prev, repeat);
      row.cls = std::string(class_name(PageClass(k)));
      row.codec = codec_choice_name(choice);
      std::printf("%-8s %-8s %7zu %10.0f %10.0f %7.2f\n", row.cls.c_str(), row.codec.c_str(), row.pages,
                  row.compress_mbps, row.decompress_mbps, row.ratio);
      rows.push_back(row);
    }
  }
  json.begin_array("codecs");
  for (auto& r : rows)
    json.begin_object().field("class", r.cls).field("codec", r.codec).field("pages", uint64_t(r.pages))
        .field("compress-MBps", r.compress_mbps).field("decompress-MBps", r.decompress_mbps)
        .field("ratio", r.ratio).end_object();
  json.end_array();
  return rows;
}

// ---- table 2: classifier cost ----

struct ClassifierCost {
  double classify_ns, uniform_ns, lz4_ns, overhead, warm_classify_ns, warm_lz4_ns, warm_overhead;
};

ClassifierCost classifier_cost(const Corpus& c, unsigned repeat) {
  std::vector<const uint8_t*> p(c.pages());
  for (size_t i = 0; i < p.size(); i++) p[i] = c.page(i);
  std::vector<double> cls_ns, uni_ns, warm_cls, warm_lz4;
  unsigned sink = 0;
  for (unsigned r = 0; r < repeat; r++) {
    uint64_t t0 = thread_cpu_ns();
    for (auto* q : p) sink += unsigned(classify(q).cls);
    cls_ns.push_back(double(thread_cpu_ns() - t0) / double(p.size()));
    t0 = thread_cpu_ns();
    for (auto* q : p) sink += unsigned(classify_uniform(q).cls);
    uni_ns.push_back(double(thread_cpu_ns() - t0) / double(p.size()));
    // Warm: 64 pages at a time copied into a reused buffer first, as the
    // engine's page reader (process_vm_readv) leaves them.
    std::vector<uint8_t> buf(64 * kPageSize), out(kPageSize);
    CodecContext ctx;
    std::vector<double> chunk_cls, chunk_lz4;  // per-page ns of each 64-page chunk
    for (size_t at = 0; at < p.size(); at += 64) {
      size_t n = std::min<size_t>(64, p.size() - at);
      for (size_t i = 0; i < n; i++) std::memcpy(&buf[i * kPageSize], p[at + i], kPageSize);
      uint64_t c0 = cycles();
      for (size_t i = 0; i < n; i++) sink += unsigned(classify(&buf[i * kPageSize]).cls);
      uint64_t c1 = cycles();
      for (size_t i = 0; i < n; i++)
        sink += unsigned(lz4::encode(ctx, 1, &buf[i * kPageSize], out.data(), kPageSize - 64));
      uint64_t c2 = cycles();
      chunk_cls.push_back(double(cycles_to_ns(c1 - c0)) / double(n));
      chunk_lz4.push_back(double(cycles_to_ns(c2 - c1)) / double(n));
    }
    // TSC time: the median chunk is immune to the odd preemption.
    warm_cls.push_back(median(chunk_cls));
    warm_lz4.push_back(median(chunk_lz4));
  }
  asm volatile("" ::"r"(sink));
  CodecRow lz = measure_codec(CodecChoice{Codec::lz4, {}}, p, std::vector<const uint8_t*>(p.size()), repeat);
  ClassifierCost k;
  k.classify_ns = median(cls_ns);
  k.uniform_ns = median(uni_ns);
  k.lz4_ns = double(kPageSize) / lz.compress_mbps * 1e3;
  k.overhead = k.classify_ns / k.lz4_ns;
  k.warm_classify_ns = median(warm_cls);
  k.warm_lz4_ns = median(warm_lz4);
  k.warm_overhead = k.warm_classify_ns / k.warm_lz4_ns;
  return k;
}

// The worst overhead over the corpora, cold and warm.
std::pair<double, double> classifier_table(const std::vector<Corpus>& corpora, unsigned repeat, JsonWriter& json) {
  std::printf("\n== classifier cost against LZ4 on the same pages (ns per page, one core) ==\n");
  std::printf("%-10s %9s %9s %9s %9s | %9s %9s %9s\n", "", "cold:", "", "", "", "warm (in cache):", "", "");
  std::printf("%-10s %9s %9s %9s %9s | %9s %9s %9s\n", "corpus", "classify", "unif.only", "lz4", "overhead",
              "classify", "lz4", "overhead");
  json.begin_array("classifier");
  double worst_overhead = 0, worst_warm = 0;
  for (auto& c : corpora) {
    ClassifierCost k = classifier_cost(c, repeat);
    worst_overhead = std::max(worst_overhead, k.overhead);
    worst_warm = std::max(worst_warm, k.warm_overhead);
    std::printf("%-10s %9.1f %9.1f %9.1f %8.1f%% | %9.1f %9.1f %8.1f%%\n", c.name.c_str(), k.classify_ns,
                k.uniform_ns, k.lz4_ns, 100 * k.overhead, k.warm_classify_ns, k.warm_lz4_ns, 100 * k.warm_overhead);
    json.begin_object().field("corpus", c.name).field("classify-ns", k.classify_ns)
        .field("uniform-test-ns", k.uniform_ns).field("lz4-ns", k.lz4_ns).field("overhead", k.overhead)
        .field("warm-classify-ns", k.warm_classify_ns).field("warm-lz4-ns", k.warm_lz4_ns)
        .field("warm-overhead", k.warm_overhead).end_object();
  }
  json.end_array();
  return {worst_overhead, worst_warm};
}

// The zero/uniform test alone on uniform pages (full scan), in GB/s.
void zero_test(unsigned repeat, JsonWriter& json) {
  std::vector<uint8_t> zero(kPageSize * 1024, 0);
  std::vector<double> ns;
  unsigned sink = 0;
  for (unsigned r = 0; r < std::max<uint64_t>(repeat, 3); r++) {
    uint64_t t0 = thread_cpu_ns();
    for (size_t i = 0; i < 1024; i++) sink += unsigned(classify_uniform(&zero[i * kPageSize]).cls);
    ns.push_back(double(thread_cpu_ns() - t0));
  }
  asm volatile("" ::"r"(sink));
  double gbps = double(zero.size()) / median(ns);
  std::printf("zero-page test on zero pages (whole page scanned): %.1f GB/s\n", gbps);
  json.field("zero-test-GBps", gbps);
}

// ---- table 3: policies ----

struct PolicyGrid {
  std::vector<std::string> policies;
  std::vector<double> links;  // Gbit/s
  std::vector<unsigned> workers;
};

struct TargetRow {
  std::string corpus;
  double link;
  unsigned workers;
  double adaptive, best_fixed;
  std::string best_fixed_name;
};

// The compressors measured on one corpus: one per fixed policy, one per link
// and worker count for the adaptive policy, which is told them.
Result<std::vector<PolicyCase>> policy_cases(const PolicyGrid& g) {
  std::vector<PolicyCase> cases;
  for (auto& policy : g.policies) {
    auto add = [&](double link, unsigned w) -> Result<void> {
      CompressorOptions opt;
      opt.link_bytes_per_s = link;
      opt.workers = w;
      PolicyCase pc;
      pc.policy = policy;
      pc.link_bytes_per_s = link;
      pc.workers = w;
      pc.compressor = LM_TRY(Compressor::create(policy, opt));
      cases.push_back(std::move(pc));
      return ok();
    };
    if (policy != "adaptive") {
      LM_TRY(add(0, 1));
      continue;
    }
    for (double l : g.links)
      for (unsigned w : g.workers) LM_TRY(add(l * 1e9 / 8, w));
  }
  return cases;
}

using Rates = std::map<std::string, std::map<std::pair<double, unsigned>, double>>;  // policy -> (link, w) -> B/s

// One policy's row of the table on one corpus.
void report_policy(JsonWriter& json, const PolicyGrid& g, const Corpus& corpus, const std::string& policy,
                   const std::vector<PolicyCase>& cases, Rates& rate) {
  bool adaptive = policy == "adaptive";
  const PolicyCase* fixed_case = nullptr;
  for (auto& pc : cases)
    if (pc.policy == policy) fixed_case = &pc;
  json.begin_object().field("corpus", corpus.name).field("policy", policy);
  if (!adaptive)
    std::printf("%-10s %-13s %8.2f %6.2f", corpus.name.c_str(), policy.c_str(),
                fixed_case->cpu_bytes_per_s / 1e9, fixed_case->ratio);
  else
    std::printf("%-10s %-13s %8s %6s", corpus.name.c_str(), policy.c_str(), "-", "-");
  json.begin_array("delivered");
  for (double l : g.links)
    for (unsigned w : g.workers) {
      double link_bytes = l * 1e9 / 8;
      const PolicyCase* run = fixed_case;
      if (adaptive)
        for (auto& pc : cases)
          if (pc.policy == policy && pc.link_bytes_per_s == link_bytes && pc.workers == w) run = &pc;
      double d = delivered(*run, link_bytes, w);
      rate[policy][{l, w}] = d;
      std::printf(" %8.2f", d / 1e9);
      json.begin_object().field("link-Gbps", l).field("workers", uint64_t(w)).field("delivered-GBps", d / 1e9)
          .field("cpu-GBps-per-worker", run->cpu_bytes_per_s / 1e9).field("ratio", run->ratio);
      if (adaptive) {
        run->compressor->stats().write_json(json, "compression");
        run->compressor->model()->write_json(json, "model");
      }
      json.end_object();
    }
  std::printf("\n");
  json.end_array();
  if (!adaptive) fixed_case->compressor->stats().write_json(json, "compression");
  json.end_object();
}

// The adaptive policy against the best fixed one, per link and workers.
void add_targets(const PolicyGrid& g, const std::string& corpus, Rates& rate, std::vector<TargetRow>& targets) {
  if (!rate.count("adaptive")) return;
  for (double l : g.links)
    for (unsigned w : g.workers) {
      TargetRow t{corpus, l, w, rate["adaptive"][{l, w}], 0, ""};
      for (auto& [p, m] : rate)
        if (p.rfind("fixed:", 0) == 0 && m[{l, w}] > t.best_fixed) {
          t.best_fixed = m[{l, w}];
          t.best_fixed_name = p;
        }
      targets.push_back(t);
    }
}

Result<std::vector<TargetRow>> policy_table(const std::vector<Corpus>& corpora, const PolicyGrid& g, unsigned batch,
                                            unsigned repeat, JsonWriter& json) {
  std::printf("\n== policies: delivered page data, GB/s = min(workers x CPU rate, link x ratio) ==\n");
  std::printf("%-10s %-13s %8s %6s", "corpus", "policy", "cpu GB/s", "ratio");
  for (double l : g.links)
    for (unsigned w : g.workers) std::printf(" %4.0fG/%uw", l, w);
  std::printf("\n");
  json.begin_array("policies");
  std::vector<TargetRow> targets;
  for (auto& corpus : corpora) {
    auto cases = LM_TRY(policy_cases(g));
    LM_TRY(measure_cases(cases, corpus, batch, repeat));
    Rates rate;
    for (auto& policy : g.policies) report_policy(json, g, corpus, policy, cases, rate);
    add_targets(g, corpus.name, rate, targets);
  }
  json.end_array();
  return targets;
}

// ---- targets ----

void report_targets(JsonWriter& json, const std::vector<TargetRow>& targets) {
  std::printf("\n== targets ==\n");
  json.begin_object("targets");
  json.begin_array("adaptive-vs-best-fixed");
  unsigned below = 0;
  for (auto& t : targets) {
    double ratio = t.best_fixed > 0 ? t.adaptive / t.best_fixed : 0;
    if (ratio < 0.95) below++;
    json.begin_object().field("corpus", t.corpus).field("link-Gbps", t.link).field("workers", uint64_t(t.workers))
        .field("adaptive-GBps", t.adaptive / 1e9).field("best-fixed", t.best_fixed_name)
        .field("best-fixed-GBps", t.best_fixed / 1e9).field("ratio", ratio).end_object();
    if (ratio < 0.95 || (t.corpus == "mixed" && t.link == 10))
      std::printf("adaptive / best fixed on %-9s at %3.0f Gbit/s, %u worker(s): %.3f (best fixed %s)%s\n",
                  t.corpus.c_str(), t.link, t.workers, ratio, t.best_fixed_name.c_str(),
                  ratio < 0.95 ? "  BELOW 0.95" : "");
  }
  json.end_array();
  if (!targets.empty()) {
    double worst = 10;
    for (auto& t : targets) worst = std::min(worst, t.best_fixed > 0 ? t.adaptive / t.best_fixed : 0);
    std::printf("adaptive >= 0.95 x best fixed: %zu of %zu cases (worst %.3f)\n", targets.size() - below,
                targets.size(), worst);
    json.field("adaptive-min-ratio", worst).field("adaptive-cases-below-0.95", uint64_t(below));
  }
}

Result<void> run_bench(const BenchArgs& a) {
  const uint64_t pages = a.pages ? a.pages : a.quick ? 1024 : 4096;
  const unsigned repeat = unsigned(a.repeat ? a.repeat : a.quick ? 1 : 5);
  std::vector<CodecChoice> codecs;
  for (auto& name : a.codecs) codecs.push_back(LM_TRY(parse_codec_choice(name)));
  (void)cycles_per_ns();  // calibrate the per-page clock outside any timing
  std::vector<std::string> notes;
  auto corpora = LM_TRY(build_corpora(a, pages, notes));
  JsonWriter json;
  json.begin_object().field("schema", "livemig.bench.compress/1");
  host_json_fields(json);
  json.begin_object("config").field("pages-per-corpus", pages).field("repeat", uint64_t(repeat));
  json.field("batch", a.batch).end_object();
  corpora_json(json, corpora);
  auto rows = codec_table(corpora, codecs, repeat, json);
  auto [worst_overhead, worst_warm] = classifier_table(corpora, repeat, json);
  zero_test(repeat, json);
  auto targets = LM_TRY(policy_table(corpora, {a.policies, a.links, a.workers}, unsigned(a.batch), repeat, json));
  report_targets(json, targets);
  std::printf("classifier overhead, worst corpus: %.1f%% of LZ4's time on cold pages, %.1f%% on pages in cache\n",
              100 * worst_overhead, 100 * worst_warm);
  json.field("classifier-worst-overhead", worst_overhead).field("classifier-worst-overhead-warm", worst_warm);
  for (auto& r : rows)
    if (r.cls == "words" && (r.codec == "wkdm" || r.codec == "lz4"))
      std::printf("words pages: %-4s %6.0f MB/s compress, ratio %.2f\n", r.codec.c_str(), r.compress_mbps, r.ratio);
  json.end_object();
  json.begin_array("notes");
  for (auto& n : notes) {
    std::printf("note: %s\n", n.c_str());
    json.value(n);
  }
  json.end_array();
  json.end_object();
  std::ofstream out(a.json);
  if (!out) return Error::from_errno(strf("write %s", a.json.c_str()));
  out << json.str();
  std::printf("\nwrote %s\n", a.json.c_str());
  return ok();
}

// A CLI11 check that every item of a list parses.
template <class T>
CLI::Validator each_parses(Result<T> (*parse)(std::string_view)) {
  return CLI::Validator(
      [parse](std::string& text) -> std::string {
        auto v = parse(text);
        return v ? std::string() : v.error().message;
      },
      "");
}

}  // namespace

Run bench_compress(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto list = [&](const char* flag, auto& target, const char* help) {
    return app.add_option(flag, target, help)->delimiter(',')->allow_extra_args(false)->capture_default_str();
  };
  list("--corpus", a->corpus_files, "corpus files from 'livemig snapshot', comma-separated (added to --corpora)");
  a->corpora_option = list("--corpora", a->corpora,
                           "generated corpora: zero,uniform,words,text,random,mixed and the guest's profiles "
                           "guest-text,guest-ints,guest-random,guest-mixed");
  app.add_flag("--no-real", a->no_real, "do not capture real programs (redis-server, python3, a compiler run)");
  app.add_option("--pages", a->pages, "pages per synthetic corpus (default 4096)")
      ->transform(u64_value())
      ->check(CLI::PositiveNumber);
  list("--codecs", a->codecs, "codecs for the codec table")->check(each_parses(parse_codec_choice));
  list("--policies", a->policies, "policies")->check(each_parses(parse_policy));
  list("--links", a->links, "emulated link rates in Gbit/s")->check(CLI::PositiveNumber);
  list("--workers", a->workers, "compression workers")->transform(u64_value())->check(CLI::PositiveNumber);
  app.add_option("--batch", a->batch, "pages per batch")
      ->transform(u64_value())
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--repeat", a->repeat, "runs per measurement; the median is reported (default 5)")
      ->transform(u64_value())
      ->check(CLI::PositiveNumber);
  app.add_option("--json", a->json, "output file")->capture_default_str();
  app.add_flag("--quick", a->quick, "1024 pages per corpus, 1 run: a smoke test");
  return [a] {
    if (auto r = run_bench(*a); !r) {
      std::fprintf(stderr, "livemig: bench compress: %s\n", r.error().message.c_str());
      return 1;
    }
    return 0;
  };
}

}  // namespace lm::cmd

#include "compress/adaptive.hpp"

#include <algorithm>
#include <cmath>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/page.hpp"

namespace lm::compress {
namespace {

constexpr unsigned kWords = unsigned(PageClass::words), kText = unsigned(PageClass::text),
                   kRandom = unsigned(PageClass::random);
constexpr double kEntry = 16;
constexpr double kExploreBudget = 0.02;
constexpr uint64_t kLearningBatches = 16;  // explore every batch at first
constexpr double kMaxAlpha = 0.15;
constexpr double kHysteresis = 0.03;  // a new plan must be this much faster
constexpr uint64_t kSettleNs = 100'000'000;  // after a plan change, before the link rate tells

CodecChoice choice(Codec c, int lz4_accel = 1, int zstd_level = 1) {
  CodecChoice ch;
  ch.codec = c;
  ch.params.lz4_acceleration = lz4_accel;
  ch.params.zstd_level = zstd_level;
  return ch;
}

}  // namespace

const std::array<CodecChoice, kCandidates>& adaptive_candidates() {
  static const std::array<CodecChoice, kCandidates> c = {choice(Codec::raw), choice(Codec::lz4),
                                                          choice(Codec::lz4, 8), choice(Codec::zstd),
                                                          choice(Codec::wkdm)};
  return c;
}

int candidate_index(const CodecChoice& c) {
  const auto& all = adaptive_candidates();
  for (unsigned i = 0; i < kCandidates; i++)
    if (all[i] == c) return int(i);
  return -1;
}

AdaptiveModel::AdaptiveModel(unsigned workers, double link_bytes_per_s, bool delta_allowed,
                             bool destination_shares_cpus)
    : workers_(std::max(1u, workers)),
      link_(link_bytes_per_s),
      delta_allowed_(delta_allowed),
      destination_shares_cpus_(destination_shares_cpus) {
  // Priors (this machine, brief section 4); measurements replace them quickly.
  const double page = kPageSize + kEntry;
  auto set = [&](unsigned cls, std::array<Estimate, kCandidates> e) { est_[cls] = e; };
  //               raw            lz4           lz4:8          zstd:1          wkdm
  set(kWords, {{{450, page}, {6000, 2400}, {4000, 2800}, {15000, 1500}, {3000, 1800}}});
  set(kText, {{{450, page}, {7000, 2000}, {5000, 3000}, {15000, 1500}, {3000, page}}});
  set(kRandom, {{{450, page}, {1500, page}, {1000, page}, {4000, page}, {2500, page}}});
  est_[unsigned(PageClass::zero)][0] = {50, kEntry};
  est_[unsigned(PageClass::uniform)][0] = {60, kEntry + 8};
  est_[unsigned(PageClass::resent)][0] = {1000, 600};
  mix_[kWords] = mix_[kText] = mix_[kRandom] = 1.0 / 3;
  unsampled_ = 1;
  std::lock_guard lock(m_);
  replan();
}

void AdaptiveModel::probe_link_first() {
  std::lock_guard lock(m_);
  probing_ = true;
  probe_last_ = 0;
  probe_windows_ = 0;
  replan();
}

bool AdaptiveModel::probing() const {
  std::lock_guard lock(m_);
  return probing_;
}

void AdaptiveModel::report_link(const LinkReport& link) {
  std::lock_guard lock(m_);
  // Compressed batches' rates say nothing of the link: the destination may
  // have held them back, and socket buffers growing count as sent. Nor,
  // counting bytes written, does a window begun within 100 ms of a change
  // of codecs: the socket buffers fill (or drain) at the new rate of wire
  // bytes meanwhile, which read 370 MB/s on the 2.5 Gbit/s rig after a
  // compressing plan gave way to raw. (since_ns 0: not known.) Bytes
  // acknowledged do not count what the buffers hold.
  const bool settled = link.acked || link.since_ns == 0 || link.since_ns >= plan_since_ns_ + kSettleNs;
  if (link.raw_window && link.bytes_per_s > 0 && settled) {
    if (!link.saturated) {
      // Senders the link did not hold back were bound by the CPU: the link
      // takes at least what the CPU sends raw, or a plan that adds CPU to
      // save wire bytes would look faster than raw (on the rig without a
      // qdisc the prior 10 Gbit/s stayed, and text went lz4:8 at 1.1-1.5x
      // raw's time).
      // Once a saturated window has measured the link, an unsaturated one
      // says only that the link took its rate: at 2.5 Gbit/s the second
      // sender's window, ending just after the probe, raised L to the CPUs'
      // 5.1 GB/s, and the next 50 ms went all raw.
      link_ = std::max({link_, link.bytes_per_s, link_measured_ ? 0.0 : raw_cpu_bytes_per_s_});
      probing_ = false;
    } else if (!probing_ || link.acked) {
      link_ = link.bytes_per_s;
      link_measured_ = true;
      probing_ = false;
    } else {
      // The probe's first windows also fill socket buffers that are still
      // growing: 167 MB/s was read on the 1 Gbit/s rig (125 MB/s). It ends
      // when two windows in a row agree within 10% (or after four), on the
      // lower of the last two.
      const bool agree = probe_last_ > 0 && std::abs(link.bytes_per_s - probe_last_) <= 0.1 * probe_last_;
      link_ = probe_last_ > 0 ? std::min(probe_last_, link.bytes_per_s) : link.bytes_per_s;
      probe_last_ = link.bytes_per_s;
      if (agree || ++probe_windows_ >= 4) probing_ = false;
      link_measured_ = !probing_;
    }
  }
  // The lowest seen: a message's fixed costs (system call, wake-ups) spread
  // over fewer bytes when pages compress, so a compressing plan's figure
  // overstates what one more byte costs (measured on the 2.5 Gbit/s rig:
  // 3.1 ns against raw's 0.5), which would make compressing look cheaper
  // still. Raw batches, the largest, show the cost per byte best.
  if (link.send_cpu_ns_per_byte > 0)
    send_ns_per_byte_ = send_ns_per_byte_ > 0 ? std::min(send_ns_per_byte_, link.send_cpu_ns_per_byte)
                                              : link.send_cpu_ns_per_byte;
  // The network stack's CPU outside the senders' calls: on the 2.5 Gbit/s
  // rig 0.02-0.27 ns per byte besides s's 0.12-0.24 (a tbf qdisc sends from
  // a timer, and the receiving side runs in softirq). Without it raw pages
  // looked cheap in CPU, and with the CPUs short the plans sent words pages
  // raw: 79k raw pages where cbc sent 42k.
  if (link.softirq_ns_per_byte >= 0)
    softirq_ns_per_byte_ = 0.7 * softirq_ns_per_byte_ + 0.3 * link.softirq_ns_per_byte;
  // The CPU share the migration gets, over windows that began after the
  // plan's codecs last changed.
  // - Where the host's idle CPUs are known: the CPUs the plan kept busy
  //   delivering its pages, and those idle, on average over the windows. A
  //   share of 1 assumed the workers had both cores to themselves and sent
  //   the first plans at 2.5 Gbit/s into zstd splits the CPUs could not keep
  //   up with (1.3 Gbit/s for 400 ms); learnt from shortfalls alone, it came
  //   down slowly, or too far (0.46: 40k pages sent raw where lz4 kept up
  //   with the link).
  // - Otherwise the share at which the plan's CPU takes as long as its pages
  //   took (from the plan's CPU, not from the last share, so that a
  //   shortfall with another cause does not compound). The link rate is
  //   measured on raw batches, so a shortfall of a fifth or more is the
  //   CPU's whichever the plan expected to bind; a smaller one only when it
  //   expected the CPU to. Delivering all it predicted, the plan may have
  //   more CPU: back towards all, slowly. Senders held back in the channel
  //   were not short of CPU: their shortfall is the link's (an L a few %
  //   high; taken for the CPU's at 2.5 Gbit/s it lowered the share, which
  //   sent more pages raw, which fell shorter still: a spiral to 0.4).
  if (link.pages_per_s > 0 && plan_pages_ > 0 && link.since_ns >= plan_since_ns_) {
    if (link.idle_cpus >= 0) {
      const double busy = link.pages_per_s * plan_cpu_ns_ / plan_pages_ * 1e-9;
      cpu_share_ = 0.7 * cpu_share_ + 0.3 * std::clamp((busy + link.idle_cpus) / workers_, 0.1, 1.0);
    } else if (predicted_ > 0) {
      const double delivered = link.pages_per_s / predicted_;
      if (!link.held_back && (delivered < 0.8 || (cpu_bound_ && delivered < 1))) {
        const double achieved_ns = 1e9 * plan_pages_ / link.pages_per_s;
        const double share = std::clamp(plan_cpu_ns_ / workers_ / achieved_ns, 0.1, 1.0);
        cpu_share_ = 0.7 * cpu_share_ + 0.3 * share;
      } else if (delivered >= 1) {
        cpu_share_ += 0.05 * (1 - cpu_share_);
      }
    }
  }
  replan();
}

void AdaptiveModel::set_workers(unsigned workers) {
  std::lock_guard lock(m_);
  workers_ = std::max(1u, workers);
  replan();
}

double AdaptiveModel::link_bytes_per_s() const {
  std::lock_guard lock(m_);
  return link_;
}

double AdaptiveModel::send_cpu_ns_per_byte() const {
  std::lock_guard lock(m_);
  return send_ns_per_byte_;
}

void AdaptiveModel::feed(const Feedback& fb) {
  std::lock_guard lock(m_);
  batches_++;
  // Exploration credit: 2% of the CPU the batches take, spent by trials;
  // bounded so a burst of expensive batches does not buy a long spree.
  explore_credit_ = std::min(explore_credit_ + kExploreBudget * double(fb.ns), 200000.0);
  if (batches_ > kLearningBatches) explore_credit_ -= double(fb.explore_ns);
  // Raw costs the same whatever the content (a copy of a cold page): one
  // estimate for the three classes, from every raw page of any of them.
  Feedback merged = fb;
  Sample raw_all;
  for (unsigned c : {kWords, kText, kRandom}) {
    raw_all.pages += fb.by_class[c][0].pages;
    raw_all.wire_bytes += fb.by_class[c][0].wire_bytes;
    raw_all.ns += fb.by_class[c][0].ns;
  }
  for (unsigned c : {kWords, kText, kRandom}) merged.by_class[c][0] = raw_all;
  for (unsigned c = 0; c < kClassCount; c++)
    for (unsigned k = 0; k < kCandidates; k++) {
      const Sample& s = merged.by_class[c][k];
      if (!s.pages) continue;
      // The first measurements replace the prior (running mean); after that
      // an EWMA weighted by pages, slow enough that one noisy batch on a
      // shared machine does not flip the plan, and clamped to 2x per update.
      Estimate& e = est_[c][k];
      double n = double(s.pages);
      double a = std::max(n / (e.samples + n), std::min(kMaxAlpha, n / (n + 8)));
      double ns = double(s.ns) / n, bytes = double(s.wire_bytes) / n;
      if (e.samples > 0) ns = std::clamp(ns, e.ns / 2, 2 * e.ns);
      e.ns = (1 - a) * e.ns + a * ns;
      e.bytes = (1 - a) * e.bytes + a * bytes;
      e.samples += n;
      updated_[c][k] = batches_;
    }
  auto follow = [](double& estimate, const Sample& s) {
    if (!s.pages) return;
    double n = double(s.pages);
    double a = std::min(kMaxAlpha, n / (n + 8));
    estimate = (1 - a) * estimate + a * std::clamp(double(s.ns) / n, estimate / 2, 2 * estimate);
  };
  follow(fused_raw_ns_, fb.fused_raw);
  follow(copy_ns_, fb.page_copy);
  if (fb.sample_pages) {
    double a = std::min(0.5, double(fb.sample_pages) / double(fb.sample_pages + 4));
    sample_ns_ = (1 - a) * sample_ns_ + a * std::min(double(fb.sample_ns) / double(fb.sample_pages), 3 * sample_ns_);
  }
  // Class mix: zero/uniform/resent as decayed page counts; the sampled
  // classes as shares of the non-uniform pages.
  // Smooth enough that the pages of one region of memory do not decide for
  // the whole (~30 batches, a few ms of compression), quick enough to
  // follow a change of content within a fraction of a second.
  constexpr double kDecay = 0.97;
  uint64_t sampled = fb.class_pages[kWords] + fb.class_pages[kText] + fb.class_pages[kRandom];
  for (unsigned c : {unsigned(PageClass::zero), unsigned(PageClass::uniform), unsigned(PageClass::resent)})
    mix_[c] = kDecay * mix_[c] + double(fb.class_pages[c]);
  unsampled_ = kDecay * unsampled_ + double(sampled + fb.unsampled_pages);
  if (sampled) {
    // A running mean over the first pages, then an EWMA.
    mix_samples_ += double(sampled);
    double a = std::max(double(sampled) / mix_samples_, std::min(0.05, double(sampled) / double(sampled + 64)));
    for (unsigned c : {kWords, kText, kRandom})
      mix_[c] = (1 - a) * mix_[c] + a * double(fb.class_pages[c]) / double(sampled);
  }
  // Re-planning costs a few microseconds: after 1 ms of compression or 16
  // batches, whichever comes first (a link report re-plans at once).
  ns_since_replan_ += fb.ns;
  if (++batches_since_replan_ >= 16 || ns_since_replan_ >= 1000000 || batches_ <= kLearningBatches) replan();
}

// The destination's CPU to decode one page of class cls sent with
// candidate k. The source cannot time it, so it is the encoding time scaled
// by the codec's decode/encode ratio on this machine's page classes
// (`livemig bench compress`, words and text: lz4 0.15-0.2, lz4:8 0.3,
// zstd:1 0.35-0.4, wkdm ~1); a page that did not compress is a copy.
double AdaptiveModel::decode_ns(unsigned cls, unsigned k) const {
  static constexpr std::array<double, kCandidates> kDecodeShare = {1.0, 0.2, 0.3, 0.4, 1.0};
  const Estimate& e = est_[cls][k];
  if (k == 0 || e.bytes >= double(kPageSize)) return copy_ns_;
  return kDecodeShare[k] * e.ns;
}

void AdaptiveModel::replan() {
  ns_since_replan_ = 0;
  batches_since_replan_ = 0;
  const double zero = mix_[unsigned(PageClass::zero)], uni = mix_[unsigned(PageClass::uniform)],
               resent = delta_allowed_ ? mix_[unsigned(PageClass::resent)] : 0.0;
  const double n = zero + uni + resent + unsampled_;
  if (n <= 0) return;
  // Fixed part: the classes whose codec is not a choice.
  double cpu0 = zero * est_[unsigned(PageClass::zero)][0].ns + uni * est_[unsigned(PageClass::uniform)][0].ns +
                resent * est_[unsigned(PageClass::resent)][0].ns;
  double wire0 = zero * est_[unsigned(PageClass::zero)][0].bytes +
                 uni * est_[unsigned(PageClass::uniform)][0].bytes +
                 resent * est_[unsigned(PageClass::resent)][0].bytes;
  const double fw = unsampled_ * mix_[kWords], ft = unsampled_ * mix_[kText], fr = unsampled_ * mix_[kRandom];
  const double link_ns_per_byte = 1e9 / std::max(link_, 1.0);
  const double cpus = workers_ * cpu_share_;
  // CPU per wire byte: the sending threads push every byte through the
  // transport, on one host the receiving threads take it out again, and
  // the network stack works on it in softirq besides.
  const double cpu_per_byte = send_ns_per_byte_ * (destination_shares_cpus_ ? 2 : 1) + softirq_ns_per_byte_;
  // CPU per page of class c with candidate k: encoding, and on one host decoding.
  auto page_cpu = [&](unsigned c, unsigned k) {
    return est_[c][k].ns + (destination_shares_cpus_ ? decode_ns(c, k) : 0.0);
  };
  auto time_of = [&](unsigned w, unsigned t, unsigned r, double* cpu_out, double* wire_out) {
    double sampling = unsampled_ * sample_ns_ * ((w == t && t == r) ? 1.0 / 16 : 1.0);
    double cpu = cpu0 + sampling + fw * page_cpu(kWords, w) + ft * page_cpu(kText, t) + fr * page_cpu(kRandom, r);
    if (w == 0 && t == 0 && r == 0)  // the fused all-raw path
      cpu = cpu0 + unsampled_ * (sample_ns_ / 32 + fused_raw_ns_ + (destination_shares_cpus_ ? decode_ns(kWords, 0) : 0));
    double wire = wire0 + fw * est_[kWords][w].bytes + ft * est_[kText][t].bytes + fr * est_[kRandom][r].bytes;
    cpu += wire * cpu_per_byte;
    *cpu_out = cpu;
    *wire_out = wire;
    return std::max(cpu / cpus, wire * link_ns_per_byte);
  };
  double best = INFINITY, best_cpu = INFINITY, best_wire = 0;
  unsigned bw = 0, bt = 0, br = 0;
  // Until the link is measured (probing), raw only: its batches show the
  // link's rate.
  const unsigned candidates = probing_ ? 1 : kCandidates;
  for (unsigned w = 0; w < candidates; w++)  // 125 combinations, ~1 us
    for (unsigned t = 0; t < candidates; t++)
      for (unsigned r = 0; r < candidates; r++) {
        double cpu, wire;
        double time = time_of(w, t, r, &cpu, &wire);
        if (w == 0 && t == 0 && r == 0)  // what the CPUs send all raw, link aside
          raw_cpu_bytes_per_s_ = cpu > 0 ? 1e9 * wire * cpus / cpu : 0;
        // Within 1%, the plan that spends less CPU wins.
        if (time < best * 0.99 || (time <= best * 1.01 && cpu < best_cpu)) {
          best = std::min(best, time);
          best_cpu = cpu;
          best_wire = wire;
          bw = w, bt = t, br = r;
        }
      }
  // Keep the current plan unless the best is clearly faster.
  if (have_plan_ && !probing_) {
    double cur_cpu, cur_wire;
    double cur = time_of(cur_[0], cur_[1], cur_[2], &cur_cpu, &cur_wire);
    if (cur <= best * (1 + kHysteresis)) {
      bw = cur_[0], bt = cur_[1], br = cur_[2];
      best = cur, best_cpu = cur_cpu, best_wire = cur_wire;
    }
  }
  have_plan_ = true;
  const Plan before = plan_;
  cur_ = {bw, bt, br};
  const auto& cand = adaptive_candidates();
  plan_ = Plan{};
  plan_.by_class[unsigned(PageClass::zero)].codec = Codec::zero;
  plan_.by_class[unsigned(PageClass::uniform)].codec = Codec::uniform;
  plan_.by_class[kWords] = cand[bw];
  plan_.by_class[kText] = cand[bt];
  plan_.by_class[kRandom] = cand[br];
  plan_.by_class[unsigned(PageClass::resent)].codec = Codec::delta;
  plan_.sample = !(bw == bt && bt == br);
  plan_.expected_ns[kWords] = float(est_[kWords][bw].ns);
  plan_.expected_ns[kText] = float(est_[kText][bt].ns);
  plan_.expected_ns[kRandom] = float(est_[kRandom][br].ns);
  plan_.expected_sample_ns = float(sample_ns_);
  plan_.expected_fused_raw_ns = float(fused_raw_ns_);

  // A split: one class's pages shared between its codec and another in the
  // proportion where CPU time and link time meet. When one codec leaves the
  // link idle and the next better one leaves the CPU idle, the mix beats both.
  // A new split must gain 5% (estimates are noisy); the current one, on the
  // same codecs, stays while it gains at all and no other gains 5% more:
  // else the plan flipped between split and none every few milliseconds
  // (40 times in 0.2 s at 2.5 Gbit/s), and each flip restarted the time
  // before a link window or the CPU share may be measured.
  struct Split {
    double time = INFINITY;
    int cls = -1;  // none
    unsigned alt = 0;
    double x = 0, cpu = 0, wire = 0;
  };
  Split kept;  // the current plan's split, re-evaluated
  if (plan_.by_class == before.by_class)
    for (unsigned c : {kWords, kText, kRandom})
      if (before.alt_fraction[c] > 0 && candidate_index(before.alt[c]) >= 0)
        kept.cls = int(c), kept.alt = unsigned(candidate_index(before.alt[c]));
  const std::array<unsigned, 3> classes = {kWords, kText, kRandom};
  const std::array<double, 3> share = {fw, ft, fr};
  Split split{best, -1, 0, 0, best_cpu, best_wire};  // no split yet: the plan's own figures
  for (unsigned i = 0; i < 3; i++) {
    unsigned c = classes[i], k0 = cur_[i];
    if (share[i] <= 0) continue;
    // A split classifies every page and copies raw pages apart from the
    // zero test: the base is the plan's cost on that path.
    double cpu_b = cpu0 + unsampled_ * sample_ns_ + fw * page_cpu(kWords, cur_[0]) + ft * page_cpu(kText, cur_[1]) +
                   fr * page_cpu(kRandom, cur_[2]) + best_wire * cpu_per_byte;
    for (unsigned k = 0; k < kCandidates; k++) {
      if (k == k0) continue;
      double dcpu = share[i] * (page_cpu(c, k) - page_cpu(c, k0));
      double dwire = share[i] * (est_[c][k].bytes - est_[c][k0].bytes);
      dcpu += dwire * cpu_per_byte;
      double denom = dcpu / cpus - dwire * link_ns_per_byte;
      if (denom == 0) continue;
      double x = (best_wire * link_ns_per_byte - cpu_b / cpus) / denom;
      if (!(x > 0.02 && x < 0.98)) continue;
      double cpu = cpu_b + x * dcpu, wire = best_wire + x * dwire;
      const Split candidate{std::max(cpu / cpus, wire * link_ns_per_byte), int(c), k, x, cpu, wire};
      if (candidate.cls == kept.cls && k == kept.alt) {
        if (candidate.time < best) kept = candidate;
      } else if (candidate.time < split.time * 0.95) {
        split = candidate;
      }
    }
  }
  if (kept.time < INFINITY && kept.time <= split.time / 0.95) split = kept;
  if (split.cls >= 0 && !probing_) {
    plan_.alt[unsigned(split.cls)] = cand[split.alt];
    plan_.alt_fraction[unsigned(split.cls)] = float(split.x);
    plan_.alt_expected_ns[unsigned(split.cls)] = float(est_[unsigned(split.cls)][split.alt].ns);
    plan_.sample = true;
    best = split.time;
    best_cpu = split.cpu;
    best_wire = split.wire;
  }
  // Deltas save wire bytes for a memcpy into the cache per page: worth it
  // only while the link, not the CPU, is the bottleneck.
  cpu_bound_ = best_cpu / cpus > best_wire * link_ns_per_byte;
  plan_.delta = delta_allowed_ && !cpu_bound_;
  // The plan's codecs changed (a split's share moving is the same plan).
  bool same = plan_.by_class == before.by_class;
  for (unsigned c = 0; c < kClassCount; c++)
    same = same && (plan_.alt_fraction[c] > 0) == (before.alt_fraction[c] > 0) &&
           (plan_.alt_fraction[c] == 0 || plan_.alt[c] == before.alt[c]);
  if (!same) plan_since_ns_ = now_ns();
  predicted_ = best > 0 ? 1e9 * n / best : 0;
  plan_cpu_ns_ = best_cpu;
  plan_pages_ = n;
}

Plan AdaptiveModel::plan() const {
  std::lock_guard lock(m_);
  return plan_;
}

bool AdaptiveModel::may_explore() const {
  std::lock_guard lock(m_);
  return batches_ < kLearningBatches || explore_credit_ > 0;
}

unsigned AdaptiveModel::explore_candidate(PageClass cls) const {
  std::lock_guard lock(m_);
  unsigned c = unsigned(cls);
  int planned = candidate_index(plan_.by_class[c]);
  unsigned best = 1;
  uint64_t oldest = UINT64_MAX;
  // Not raw: a trial copy of a page already in cache would flatter it; raw
  // is measured on real pages (random pages nearly always go raw).
  for (unsigned k = 1; k < kCandidates; k++)
    if (int(k) != planned && updated_[c][k] < oldest) {
      oldest = updated_[c][k];
      best = k;
    }
  return best;
}

AdaptiveModel::Estimate AdaptiveModel::estimate(PageClass cls, unsigned candidate) const {
  std::lock_guard lock(m_);
  return est_[unsigned(cls)][candidate];
}

double AdaptiveModel::predicted_pages_per_s() const {
  std::lock_guard lock(m_);
  return predicted_;
}

}  // namespace lm::compress

namespace lm::compress {

void AdaptiveModel::write_json(JsonWriter& w, const char* key) const {
  std::lock_guard lock(m_);
  w.begin_object(key).field("link-Bps", link_).field("workers", uint64_t(workers_)).field("delta", plan_.delta);
  w.field("predicted-pages-per-s", predicted_).field("sample-ns", sample_ns_).field("fused-raw-ns", fused_raw_ns_)
      .field("copy-ns", copy_ns_);
  w.field("send-ns-per-byte", send_ns_per_byte_).field("softirq-ns-per-byte", softirq_ns_per_byte_).field("cpu-share", cpu_share_).field("probing", probing_);
  w.begin_object("plan");
  for (unsigned c : {kWords, kText, kRandom}) {
    std::string name = codec_choice_name(plan_.by_class[c]);
    if (plan_.alt_fraction[c] > 0)
      name += strf(" + %.0f%% %s", 100 * plan_.alt_fraction[c], codec_choice_name(plan_.alt[c]).c_str());
    w.field(class_name(PageClass(c)), name);
  }
  w.end_object();
  w.begin_object("estimates");
  for (unsigned c : {kWords, kText, kRandom}) {
    w.begin_object(class_name(PageClass(c)));
    w.field("share", mix_[c]);
    for (unsigned k = 0; k < kCandidates; k++)
      w.begin_object(codec_choice_name(adaptive_candidates()[k])).field("ns", est_[c][k].ns)
          .field("wire-bytes", est_[c][k].bytes).end_object();
    w.end_object();
  }
  w.end_object().end_object();
}

}  // namespace lm::compress

#include "compress/adaptive.hpp"

#include <algorithm>
#include <cmath>

#include "common/page.hpp"

namespace lm::compress {
namespace {

constexpr unsigned kWords = unsigned(PageClass::words), kText = unsigned(PageClass::text),
                   kRandom = unsigned(PageClass::random);
constexpr double kEntry = 16;
constexpr double kExploreBudget = 0.02;

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
                                                          choice(Codec::zstd), choice(Codec::wkdm)};
  return c;
}

int candidate_index(const CodecChoice& c) {
  const auto& all = adaptive_candidates();
  for (unsigned i = 0; i < kCandidates; i++)
    if (all[i] == c) return int(i);
  return -1;
}

AdaptiveModel::AdaptiveModel(unsigned workers, double link_bytes_per_s, bool delta_allowed)
    : workers_(std::max(1u, workers)), link_(link_bytes_per_s), delta_allowed_(delta_allowed) {
  // Priors (this machine, brief section 4); measurements replace them quickly.
  const double page = kPageSize + kEntry;
  auto set = [&](unsigned cls, std::array<Estimate, kCandidates> e) { est_[cls] = e; };
  //                 raw              lz4             zstd:1          wkdm
  set(kWords, {{{400, page}, {3000, 2000}, {8000, 1200}, {2000, 1300}}});
  set(kText, {{{400, page}, {3000, 1400}, {9000, 900}, {3000, 3500}}});
  set(kRandom, {{{400, page}, {1000, page}, {4000, page}, {2500, page}}});
  est_[unsigned(PageClass::zero)][0] = {50, kEntry};
  est_[unsigned(PageClass::uniform)][0] = {60, kEntry + 8};
  est_[unsigned(PageClass::resent)][0] = {1000, 600};
  mix_[kWords] = mix_[kText] = mix_[kRandom] = 1.0 / 3;
  unsampled_ = 1;
  std::lock_guard lock(m_);
  replan();
}

void AdaptiveModel::report_link_rate(double bytes_per_s) {
  std::lock_guard lock(m_);
  if (bytes_per_s > 0) link_ = bytes_per_s;
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

void AdaptiveModel::feed(const Feedback& fb) {
  std::lock_guard lock(m_);
  batches_++;
  total_ns_ += fb.ns;
  explore_ns_ += fb.explore_ns;
  for (unsigned c = 0; c < kClassCount; c++)
    for (unsigned k = 0; k < kCandidates; k++) {
      const Sample& s = fb.by_class[c][k];
      if (!s.pages) continue;
      // Weight by pages so a full batch moves the estimate quickly and a
      // single trial page only nudges it.
      double a = std::min(0.5, double(s.pages) / double(s.pages + 4));
      Estimate& e = est_[c][k];
      e.ns = (1 - a) * e.ns + a * double(s.ns) / double(s.pages);
      e.bytes = (1 - a) * e.bytes + a * double(s.wire_bytes) / double(s.pages);
      updated_[c][k] = batches_;
    }
  // Class mix: zero/uniform/resent as decayed page counts; the sampled
  // classes as shares of the non-uniform pages.
  constexpr double kDecay = 0.7;
  uint64_t sampled = fb.class_pages[kWords] + fb.class_pages[kText] + fb.class_pages[kRandom];
  for (unsigned c : {unsigned(PageClass::zero), unsigned(PageClass::uniform), unsigned(PageClass::resent)})
    mix_[c] = kDecay * mix_[c] + double(fb.class_pages[c]);
  unsampled_ = kDecay * unsampled_ + double(sampled + fb.unsampled_pages);
  if (sampled) {
    double a = std::min(0.6, double(sampled) / double(sampled + 8));
    for (unsigned c : {kWords, kText, kRandom})
      mix_[c] = (1 - a) * mix_[c] + a * double(fb.class_pages[c]) / double(sampled);
  }
  replan();
}

void AdaptiveModel::replan() {
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
  double best = INFINITY, best_cpu = INFINITY, best_wire = 0;
  unsigned bw = 0, bt = 0, br = 0;
  for (unsigned w = 0; w < kCandidates; w++)
    for (unsigned t = 0; t < kCandidates; t++)
      for (unsigned r = 0; r < kCandidates; r++) {
        double cpu = cpu0 + fw * est_[kWords][w].ns + ft * est_[kText][t].ns + fr * est_[kRandom][r].ns;
        double wire = wire0 + fw * est_[kWords][w].bytes + ft * est_[kText][t].bytes + fr * est_[kRandom][r].bytes;
        double time = std::max(cpu / workers_, wire * link_ns_per_byte);
        // Within 1%, the plan that spends less CPU wins.
        if (time < best * 0.99 || (time <= best * 1.01 && cpu < best_cpu)) {
          best = std::min(best, time);
          best_cpu = cpu;
          best_wire = wire;
          bw = w, bt = t, br = r;
        }
      }
  const auto& cand = adaptive_candidates();
  plan_.by_class[unsigned(PageClass::zero)].codec = Codec::zero;
  plan_.by_class[unsigned(PageClass::uniform)].codec = Codec::uniform;
  plan_.by_class[kWords] = cand[bw];
  plan_.by_class[kText] = cand[bt];
  plan_.by_class[kRandom] = cand[br];
  plan_.by_class[unsigned(PageClass::resent)].codec = Codec::delta;
  plan_.sample = !(bw == bt && bt == br);
  // Deltas save wire bytes for a memcpy into the cache per page: worth it
  // only while the link, not the CPU, is the bottleneck.
  plan_.delta = delta_allowed_ && best_wire * link_ns_per_byte >= best_cpu / workers_;
  predicted_ = best > 0 ? 1e9 * n / best : 0;
}

Plan AdaptiveModel::plan() const {
  std::lock_guard lock(m_);
  return plan_;
}

bool AdaptiveModel::may_explore() const {
  std::lock_guard lock(m_);
  return double(explore_ns_) <= kExploreBudget * double(total_ns_);
}

unsigned AdaptiveModel::explore_candidate(PageClass cls) const {
  std::lock_guard lock(m_);
  unsigned c = unsigned(cls);
  int planned = candidate_index(plan_.by_class[c]);
  unsigned best = 0;
  uint64_t oldest = UINT64_MAX;
  for (unsigned k = 0; k < kCandidates; k++)
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

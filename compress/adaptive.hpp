// The adaptive policy's model (shared by all workers of a migration).
//
// For each page class it keeps, per candidate codec, an estimate of the CPU
// time per page and the wire bytes per page (payload + 16-byte entry), fed
// by every batch the workers compress and by a small budget of trial
// compressions of other candidates (about 2% of compression CPU time, more
// during the first batches). With the
// class mix f_c of recent pages, W workers and link rate L it picks, per
// class, the codecs that maximise delivered pages per second:
//     time per page = max( sum_c f_c * (cpu_c + s * bytes_c) / W ,  sum_c f_c * bytes_c / L )
// where s is the sending threads' CPU per wire byte inside the transport (on
// veth or loopback most of the network stack runs there, so fewer bytes also
// save CPU, and a fast "link" is CPU, not a free parallel resource). When
// the destination shares the CPUs (one host), its part is added to cpu_c:
// decoding (a share of the encoding time per codec, below) and receiving
// (s per wire byte again), and W counts all the workers.
// by enumerating all combinations (5 candidates ^ 3 classes). On a link
// faster than the CPU can compress the CPU term dominates and raw wins. The
// plan is recomputed every millisecond of compression (or 16 batches) and
// on every link report, so it follows a change of link rate or content
// within a few milliseconds.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

#include "compress/classifier.hpp"
#include "compress/policy.hpp"

namespace lm {
class JsonWriter;
}

namespace lm::compress {

// What the senders measured of the link.
struct LinkReport {
  double bytes_per_s = 0;           // wire bytes per second the senders achieved together
  bool saturated = false;           // the link held them back: bytes_per_s is its rate
  double send_cpu_ns_per_byte = 0;  // s: the senders' CPU per wire byte inside the transport (0: not known)
  double pages_per_s = 0;           // pages the senders delivered per second together lately (0: not known)
  uint64_t since_ns = 0;            // ... since this time (now_ns())
  bool raw_window = true;           // measured on batches sent (nearly) raw
  // bytes_per_s counts bytes the peer acknowledged, not bytes written into
  // socket buffers that may still be growing: one saturated window tells
  // the link, and so does one begun just after a plan change.
  bool acked = false;
  // The host's CPUs idle over the window, on average (negative: not known).
  double idle_cpus = -1;
  // The host's softirq CPU over the window per byte acknowledged: the
  // network stack's work outside the senders' calls (a qdisc's timer, the
  // receiving side, acknowledgements). Negative: not known.
  double softirq_ns_per_byte = -1;
  // The senders spent more than 15% of their time blocked in the channel
  // (whatever the batches): their CPU was not what limited them.
  bool held_back = false;
};

inline constexpr unsigned kCandidates = 5;
// Candidates for the words, text and random classes.
const std::array<CodecChoice, kCandidates>& adaptive_candidates();
// Index of c among the candidates, or -1.
int candidate_index(const CodecChoice& c);

struct Sample {
  uint64_t pages = 0;
  uint64_t wire_bytes = 0;  // payload + entry
  uint64_t ns = 0;
};

// What one batch teaches the model. For zero, uniform and resent pages only
// candidate slot 0 is used (their codec is fixed).
struct Feedback {
  std::array<std::array<Sample, kCandidates>, kClassCount> by_class{};
  std::array<uint64_t, kClassCount> class_pages{};  // words/text/random: sampled pages only
  uint64_t unsampled_pages = 0;                     // non-uniform pages not sampled
  uint64_t sample_pages = 0, sample_ns = 0;         // the sampling classifier's cost
  Sample fused_raw;  // raw pages of an all-raw plan: copy (or none, in place) and zero test in one pass
  Sample page_copy;  // whole-page copies timed: a raw page's cost to the destination
  uint64_t ns = 0;                                  // all compression CPU of the batch
  uint64_t explore_ns = 0;
};

class AdaptiveModel {
 public:
  AdaptiveModel(unsigned workers, double link_bytes_per_s, bool delta_allowed,
                bool destination_shares_cpus = false);

  // A saturated report sets L; an unsaturated one only raises it, to at
  // least what the CPUs send raw until a saturated one has measured the
  // link, to its own rate after (the link took all it was given, so it is
  // at least that fast, and a plan that compresses more must not make it
  // look slower); neither unless measured on raw batches. s: the lowest
  // reported.
  void report_link(const LinkReport& link);
  // Plans raw until reports measured on raw batches tell the link (one
  // saturated window counted in acknowledged bytes, or two in written bytes
  // in a row that agree, or one unsaturated): the senders
  // block on a full link, but also on a destination short of CPU, and
  // decoding compressed pages takes it more CPU; raw batches tell the two
  // apart. (Taken for the link, the slower receiving under compression
  // looked like a slower link and asked for heavier compression still.)
  void probe_link_first();
  bool probing() const;  // still raw for the probe
  void set_workers(unsigned workers);
  void feed(const Feedback& fb);

  Plan plan() const;
  bool may_explore() const;
  // The candidate (not the planned one) least recently measured for cls.
  unsigned explore_candidate(PageClass cls) const;

  struct Estimate {
    double ns = 0;       // CPU per page
    double bytes = 0;    // wire bytes per page
    double samples = 0;  // pages measured so far (0: still the prior)
  };
  Estimate estimate(PageClass cls, unsigned candidate) const;
  double link_bytes_per_s() const;
  double send_cpu_ns_per_byte() const;
  void write_json(JsonWriter& w, const char* key) const;  // plan and estimates
  // Predicted delivered pages per second of the current plan.
  double predicted_pages_per_s() const;

 private:
  void replan();  // with m_ held
  double decode_ns(unsigned cls, unsigned candidate) const;

  mutable std::mutex m_;
  unsigned workers_;
  double link_;
  bool delta_allowed_;
  bool destination_shares_cpus_;
  std::array<std::array<Estimate, kCandidates>, kClassCount> est_{};
  std::array<std::array<uint64_t, kCandidates>, kClassCount> updated_{};  // batch number of the last update
  std::array<double, kClassCount> mix_{};  // decayed page counts; words/text/random as shares of the sampled
  double unsampled_ = 0;
  double mix_samples_ = 0;  // sampled pages seen (running mean at first)
  double sample_ns_ = 150;     // sampling classifier per page
  double fused_raw_ns_ = 300;  // raw page when every class is raw (fused copy + test)
  double copy_ns_ = 300;       // a page copied: what decoding a raw page costs
  double send_ns_per_byte_ = 0;  // the senders' CPU per wire byte (0 until reported)
  double softirq_ns_per_byte_ = 0;  // the host's softirq CPU per wire byte (0 until reported)
  double raw_cpu_bytes_per_s_ = 0;  // what the CPUs send with the all-raw plan, link aside
  // The share of the workers' CPUs the migration gets: achieved against
  // predicted pages per second while the plan is bound by CPU (other
  // processes, the guest, costs the model does not see).
  double cpu_share_ = 1;
  bool cpu_bound_ = false;  // the current plan's CPU time exceeds its link time
  bool probing_ = false;    // raw until the link is measured on raw batches
  double probe_last_ = 0;   // the probe's last saturated window (bytes/s)
  unsigned probe_windows_ = 0;
  bool link_measured_ = false;  // a saturated window has set link_
  uint64_t batches_ = 0;
  double explore_credit_ = 0;
  uint64_t ns_since_replan_ = 0;
  unsigned batches_since_replan_ = 0;  // ns of trial compression allowed
  Plan plan_;
  bool have_plan_ = false;
  std::array<unsigned, 3> cur_{};  // candidates of the current plan: words, text, random
  double predicted_ = 0;
  double plan_cpu_ns_ = 0, plan_pages_ = 0;  // the plan's CPU for plan_pages_ pages of the mix
  uint64_t plan_since_ns_ = 0;               // when the codecs of the plan last changed
};

}  // namespace lm::compress

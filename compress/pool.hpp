// A pool of compression worker threads: the engine submits batches and
// sends earlier results while later ones compress. Each worker owns a
// Compressor made by make_worker() (shared delta cache and adaptive model).
// Results come back through futures, one per batch, in any order the caller
// waits for them.
#pragma once

#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "compress/compressor.hpp"

namespace lm::compress {

struct BatchJob {
  std::vector<uint64_t> addrs;
  std::vector<const uint8_t*> pages;  // must stay valid until the future is ready
};

class CompressPool {
 public:
  static Result<std::unique_ptr<CompressPool>> create(std::string_view policy, unsigned workers,
                                                       CompressorOptions options = {});
  ~CompressPool();  // finishes queued jobs, joins the workers

  std::future<Result<CompressedBatch>> submit(BatchJob job);
  void report_link(const LinkReport& link) { workers_.front()->report_link(link); }
  unsigned workers() const { return unsigned(workers_.size()); }
  // Sum of the workers' counters; consistent once submitted jobs are done.
  CompressStats stats() const;

 private:
  struct Task {
    BatchJob job;
    std::promise<Result<CompressedBatch>> done;
  };
  CompressPool() = default;
  void run(Compressor& worker);

  std::vector<std::unique_ptr<Compressor>> workers_;
  std::vector<std::thread> threads_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
};

}  // namespace lm::compress

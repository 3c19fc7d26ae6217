#include "compress/pool.hpp"

namespace lm::compress {

Result<std::unique_ptr<CompressPool>> CompressPool::create(std::string_view policy, unsigned workers,
                                                           CompressorOptions options) {
  if (workers == 0) return Error::msg("compress pool: at least one worker");
  options.workers = workers;
  auto first = LM_TRY(Compressor::create(policy, options));
  std::unique_ptr<CompressPool> pool(new CompressPool());
  for (unsigned i = 1; i < workers; i++) pool->workers_.push_back(first->make_worker());
  pool->workers_.insert(pool->workers_.begin(), std::move(first));
  for (auto& w : pool->workers_) pool->threads_.emplace_back([p = pool.get(), c = w.get()] { p->run(*c); });
  return pool;
}

CompressPool::~CompressPool() {
  {
    std::lock_guard lock(m_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

std::future<Result<CompressedBatch>> CompressPool::submit(BatchJob job) {
  Task t{std::move(job), {}};
  auto f = t.done.get_future();
  {
    std::lock_guard lock(m_);
    queue_.push_back(std::move(t));
  }
  cv_.notify_one();
  return f;
}

void CompressPool::run(Compressor& worker) {
  for (;;) {
    Task t;
    {
      std::unique_lock lock(m_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      t = std::move(queue_.front());
      queue_.pop_front();
    }
    CompressedBatch out;
    auto r = worker.compress_batch(t.job.addrs, t.job.pages, out);
    std::lock_guard lock(m_);  // stats() reads the counters under the same lock
    if (r) t.done.set_value(std::move(out));
    else t.done.set_value(std::move(r).error());
  }
}

CompressStats CompressPool::stats() const {
  std::lock_guard lock(m_);
  CompressStats s;
  for (const auto& w : workers_) s += w->stats();
  return s;
}

}  // namespace lm::compress

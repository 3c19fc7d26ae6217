// The page sink of image mode: anonymous memory (on transparent huge pages,
// written in before `ready`) per mapping of an unmodified process,
// following the source's mapping changes; nothing runs from it. After a kept
// migration it holds the image of the source's last mapping table, which
// `livemig dest --image-dir` writes out (engine/image_dir.hpp).
#pragma once

#include <sys/types.h>

#include <optional>
#include <vector>

#include "engine/image_dir.hpp"
#include "engine/page_sink.hpp"

namespace lm::engine {

class ImageSink final : public PageSink {
 public:
  // `max_ram_bytes`: an explicit --max-ram (0: none); the memory is written
  // in up front only for a table within it and within half of MemAvailable.
  explicit ImageSink(uint64_t max_ram_bytes = 0) : max_ram_bytes_(max_ram_bytes) {}
  MemoryCommit memory_commit() const override { return MemoryCommit::per_page; }
  Result<std::vector<SinkRegion>> prepare(const transport::MappingTable& table, ServeFaults faults,
                                          const SinkWait& wait) override;
  PreparedMemory prepared() const override { return prepared_; }
  Result<std::vector<PageRange>> drop(const transport::MappingTable& table) override;
  Result<std::vector<SinkRegion>> adopt(const transport::MappingTable& table) override;
  Result<void> take_exec_state(const transport::ExecStateView& state) override;
  Result<PostcopyGuestRam> postcopy_ram() override;
  bool resumes_vm() const override { return false; }
  Result<void> resume() override { return ok(); }
  Result<uint64_t> wait_running(const SinkWait& wait) override;
  Result<void> wait_ready(transport::Timeout) override { return ok(); }
  std::optional<uint64_t> progress() override { return std::nullopt; }
  Result<void> keep(const transport::MappingTable& table) override;
  void discard() override;

  // The regions held now (tests: what a drop released).
  std::vector<PageRange> held() const;
  // After a kept migration: the mappings of the source's last table, with
  // their protections; the data stays valid while the sink lives.
  const std::vector<ImageRegion>& image() const { return image_; }
  // The source process, when its engine said (the image commit's state).
  std::optional<pid_t> source_pid() const { return source_pid_; }

 private:
  uint64_t max_ram_bytes_ = 0;
  Result<std::vector<SinkRegion>> add(const transport::MappingTable& table, bool populate);
  PreparedMemory prepared_;
  std::vector<MappedMemfd> regions_;
  std::vector<ImageRegion> image_;
  std::optional<pid_t> source_pid_;
};

}  // namespace lm::engine

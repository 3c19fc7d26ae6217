// The stream framing (FrameReader) against a scripted byte source: a stream
// of small, boundary-sized and large frames, delivered split at every byte
// boundary, comes out as the same messages, whether or not the source also
// fills the read-ahead tail of a large body (the next frame's header).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "transport/stream.hpp"

namespace lm::transport {
namespace {

constexpr size_t kStaging = 4096;  // frames above 1 KiB take the large path

// Delivers `bytes` in two parts: a read never crosses `split`. With `tail`,
// a read fills the tail too, as far as the part allows.
class SplitSource : public ByteSource {
 public:
  SplitSource(const std::vector<std::byte>& bytes, size_t split, bool tail)
      : bytes_(bytes), split_(split), tail_(tail) {}
  Result<size_t> read(void* buf, size_t len, Deadline, ReadMode, const StopWait&) override {
    return copy(buf, len);
  }
  Result<size_t> read_with_tail(void* buf, size_t len, void* tail, size_t tail_len, Deadline, ReadMode,
                                const StopWait&) override {
    size_t n = copy(buf, len);
    if (tail_ && n == len) n += copy(tail, tail_len);
    return n;
  }

 private:
  size_t copy(void* to, size_t len) {
    size_t limit = pos_ < split_ ? split_ : bytes_.size();
    size_t n = std::min(len, limit - pos_);
    if (n) std::memcpy(to, bytes_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  const std::vector<std::byte>& bytes_;
  size_t split_;
  bool tail_;
  size_t pos_ = 0;
};

std::vector<std::byte> message(size_t size, unsigned seed) {
  std::vector<std::byte> m(size);
  for (size_t i = 0; i < size; ++i) m[i] = std::byte((i * 131 + seed * 7) & 0xff);
  return m;
}

void append_frame(std::vector<std::byte>& stream, const std::vector<std::byte>& m) {
  FrameHeader h{kFrameData, uint32_t(m.size())};
  const auto* p = reinterpret_cast<const std::byte*>(&h);
  stream.insert(stream.end(), p, p + sizeof h);
  stream.insert(stream.end(), m.begin(), m.end());
  stream.insert(stream.end(), frame_pad(m.size()), std::byte{0});
}

class FrameReaderSplit : public ::testing::TestWithParam<bool> {};

TEST_P(FrameReaderSplit, EverySplitPointYieldsTheSameMessages) {
  // Small, empty, odd sizes, the largest in-place frame, large ones back to
  // back (the next header read with the body), large then small.
  const size_t sizes[] = {5, 0, 1017, kStaging / 4 - 8, kStaging / 4 - 7, 3001, 2048, 12, 4000, 4001, 1, 1500};
  std::vector<std::vector<std::byte>> messages;
  std::vector<std::byte> stream;
  unsigned seed = 0;
  for (size_t s : sizes) {
    messages.push_back(message(s, ++seed));
    append_frame(stream, messages.back());
  }
  FrameHeader close{kFrameClose, 0};
  const auto* c = reinterpret_cast<const std::byte*>(&close);
  stream.insert(stream.end(), c, c + sizeof close);

  for (size_t split = 0; split <= stream.size(); ++split) {
    SplitSource source(stream, split, GetParam());
    FrameReader reader(kStaging, 1 << 20);
    for (size_t i = 0; i < messages.size(); ++i) {
      auto r = reader.next(source, Deadline{}, "split");
      ASSERT_TRUE(r.ok()) << "split " << split << " message " << i << ": " << r.error().message;
      ASSERT_EQ(r->status, RecvStatus::message) << "split " << split << " message " << i;
      ASSERT_EQ(r->bytes.size(), messages[i].size()) << "split " << split << " message " << i;
      ASSERT_EQ(reinterpret_cast<uintptr_t>(r->bytes.data()) % 8, 0u);
      ASSERT_TRUE(std::equal(r->bytes.begin(), r->bytes.end(), messages[i].begin()))
          << "split " << split << " message " << i;
    }
    auto end = reader.next(source, Deadline{}, "split");
    ASSERT_TRUE(end.ok()) << end.error().message;
    ASSERT_EQ(end->status, RecvStatus::closed) << "split " << split;
  }
}

INSTANTIATE_TEST_SUITE_P(Tail, FrameReaderSplit, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "with_tail" : "without_tail"; });

}  // namespace
}  // namespace lm::transport

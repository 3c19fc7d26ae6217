// The stream framing: bytes as a socket delivers them (in chunks whose sizes
// the input picks) through FrameReader, every message out of it through
// parse_message and the decoders. Input: staging size u8, chunk pattern u8,
// then the stream.
#include <cstring>

#include "fuzz_wire.hpp"
#include "transport/stream.hpp"

using namespace lm;
using namespace lm::transport;

namespace {

class InputSource : public ByteSource {
 public:
  InputSource(std::span<const uint8_t> bytes, uint8_t pattern) : bytes_(bytes), pattern_(pattern) {}
  Result<size_t> read(void* buf, size_t len, Deadline, ReadMode, const StopWait&) override {
    static constexpr size_t kChunks[] = {1, 3, 8, 24, 100, 4096, 65536, SIZE_MAX};
    size_t chunk = kChunks[(pattern_ + reads_++) % 8];
    size_t n = std::min({len, chunk, bytes_.size() - pos_});
    if (n) std::memcpy(buf, bytes_.data() + pos_, n);
    pos_ += n;
    return n;  // 0 at the end: end of stream
  }
  // Odd patterns also fill the tail (the next header after a large body), as tcp's recvmsg does.
  Result<size_t> read_with_tail(void* buf, size_t len, void* tail, size_t tail_len, Deadline d, ReadMode m,
                                const StopWait& s) override {
    size_t n = LM_TRY(read(buf, len, d, m, s));
    if (n == len && (pattern_ & 1) && tail_len) n += LM_TRY(read(tail, tail_len, d, m, s));
    return n;
  }

 private:
  std::span<const uint8_t> bytes_;
  uint8_t pattern_;
  size_t pos_ = 0;
  unsigned reads_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::InputReader in(data, size);
  const size_t staging = size_t(4096) << (in.u8() % 3);  // 4-16 KiB: frames above a quarter take the large path
  const uint8_t pattern = in.u8();
  InputSource source(in.rest(), pattern);
  FrameReader reader(staging, 64 << 10);
  const std::string name = "fuzz";
  for (int i = 0; i < 1000; ++i) {
    auto r = reader.next(source, Deadline{}, name);
    if (!r || r->status == RecvStatus::closed) break;
    FUZZ_CHECK(r->bytes.size() <= (64u << 10));
    FUZZ_CHECK(reinterpret_cast<uintptr_t>(r->bytes.data()) % 8 == 0);  // decoders view arrays in place
    if (auto m = parse_message(r->bytes, name)) fuzz::decode_all(*m, fuzz::fuzz_table(), 0x7f);
  }
  return 0;
}

#ifndef LM_LIBFUZZER
namespace {
void append_frame(FuzzInput& s, const std::vector<uint8_t>& msg) {
  FrameHeader h{kFrameData, uint32_t(msg.size())};
  const auto* p = reinterpret_cast<const uint8_t*>(&h);
  s.insert(s.end(), p, p + sizeof h);
  s.insert(s.end(), msg.begin(), msg.end());
  s.insert(s.end(), frame_pad(msg.size()), 0);
}
}  // namespace

// Streams of valid frames: every message type, then the close mark.
std::vector<FuzzInput> fuzz_seeds() {
  std::vector<FuzzInput> seeds;
  const auto msgs = fuzz::valid_messages(kProtocolVersionMax);
  for (uint8_t staging = 0; staging < 6; staging += 5) {
    FuzzInput s = {staging, uint8_t(staging * 3)};
    for (const auto& msg : msgs) append_frame(s, msg);
    FrameHeader close{kFrameClose, 0};
    const auto* p = reinterpret_cast<const uint8_t*>(&close);
    s.insert(s.end(), p, p + sizeof close);
    seeds.push_back(std::move(s));
  }
  for (const auto& msg : msgs) {
    FuzzInput s = {2, 1};
    append_frame(s, msg);
    seeds.push_back(std::move(s));
  }
  return seeds;
}
#endif

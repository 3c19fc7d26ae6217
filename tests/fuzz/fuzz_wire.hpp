// Helpers of the targets that take protocol messages: reading an input as
// records, staging a message as a channel would deliver it, running every
// decoder with the checks of what it promises, and valid messages as seeds.
#pragma once

#include <span>
#include <vector>

#include "fuzz_target.hpp"
#include "transport/protocol.hpp"

namespace lm::fuzz {

// Reads an input front to back; past the end it gives zeros and empty spans.
class InputReader {
 public:
  InputReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t u8() { return empty() ? 0 : data_[pos_++]; }
  uint16_t u16() { return uint16_t(u8() | (u8() << 8)); }
  std::span<const uint8_t> take(size_t n);  // at most what is left
  std::span<const uint8_t> rest() { return take(size_ - pos_); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// One message of a multi-message input: flags u8, length u16, bytes.
// kSeal: the harness sets the header's length and checksum, so mutations
// reach the decoders instead of stopping at the checksum.
inline constexpr uint8_t kSeal = 1;
struct Record {
  uint8_t flags = 0;
  std::span<const uint8_t> bytes;
};
Record next_record(InputReader& in);
void append_record(FuzzInput& out, std::span<const uint8_t> message, uint8_t flags = kSeal);

// An encoded message as one contiguous copy.
std::vector<uint8_t> flatten(const transport::OutMessage& m);

// `bytes` copied into 8-aligned storage as a channel delivers them; with
// `seal`, the header's length and checksum made right.
std::span<const std::byte> stage(std::vector<uint64_t>& storage, std::span<const uint8_t> bytes, bool seal);

// The mapping table the seeds' addresses lie in (a range at the top of the
// address space included).
const transport::MappingTable& fuzz_table();

// Runs every decoder on `m` (each checks the type) and checks what a
// successful decode promises (FUZZ_CHECK).
void decode_all(const transport::Message& m, const transport::MappingTable& table, uint32_t codecs);

// One valid message of every type in the layout of `version`, against fuzz_table().
std::vector<std::vector<uint8_t>> valid_messages(uint16_t version);

}  // namespace lm::fuzz

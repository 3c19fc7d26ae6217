// The frame decoder of every message type: one message (flags u8, then the
// message bytes) through parse_message and every decode_*. With kSeal in the
// flags the harness fixes length and checksum, so mutations reach the body
// decoders; without, parse_message's own checks are what is fuzzed.
#include "fuzz_wire.hpp"

using namespace lm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::InputReader in(data, size);
  const uint8_t flags = in.u8();
  const uint32_t codecs = in.u8() | 1u;  // raw is always negotiated
  std::vector<uint64_t> storage;
  auto bytes = fuzz::stage(storage, in.rest(), flags & fuzz::kSeal);
  auto m = transport::parse_message(bytes, "fuzz");
  if (!m) return 0;
  FUZZ_CHECK(m->body.size() + sizeof(transport::MsgHeader) == bytes.size());
  fuzz::decode_all(*m, fuzz::fuzz_table(), codecs);
  return 0;
}

#ifndef LM_LIBFUZZER
std::vector<FuzzInput> fuzz_seeds() {
  std::vector<FuzzInput> seeds;
  for (uint16_t version : {transport::kProtocolVersionMin, transport::kProtocolVersionMax})
    for (const auto& msg : fuzz::valid_messages(version)) {
      FuzzInput s = {fuzz::kSeal, 0x7f};
      s.insert(s.end(), msg.begin(), msg.end());
      seeds.push_back(std::move(s));
    }
  return seeds;
}
#endif

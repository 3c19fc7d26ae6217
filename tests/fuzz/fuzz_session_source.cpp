// The source's handshake (Session::connect_with) against a fake destination
// over in-process channels: each dial gets a channel on which the fake
// destination's messages are already queued. Input: config u8 (bulk
// channels 1 + bits 0-1 % 3, bit 2: a pre-shared key, bit 3: version 1
// only), then per dial: message count u8 and that many records
// (fuzz_wire.hpp). A dial past the input's end is refused. Timeouts are a
// few milliseconds.
#include "fuzz_wire.hpp"
#include "transport/session.hpp"

using namespace lm;
using namespace lm::transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::InputReader in(data, size);
  const uint8_t cfg = in.u8();
  SessionConfig config;
  config.bulk_channels = uint16_t(1 + (cfg & 3) % 3);
  if (cfg & 4) config.psk = "fuzz-key";
  if (cfg & 8) config.version_max = 1;
  config.handshake_timeout = Timeout(5);
  config.channel.max_message = 1 << 20;
  config.session_id = 0xabcdef;
  std::vector<std::unique_ptr<Channel>> peers;  // the fake destination's ends
  std::vector<uint64_t> storage;
  auto dial = [&](Timeout) -> Result<std::unique_ptr<Channel>> {
    if (in.empty()) return Error{ECONNREFUSED, "fuzz: no more destination input"};
    auto pair = make_inproc_pair(config.channel, "fuzz");
    const unsigned count = in.u8() % 8;
    for (unsigned i = 0; i < count; ++i) {
      fuzz::Record r = fuzz::next_record(in);
      auto bytes = fuzz::stage(storage, r.bytes, r.flags & fuzz::kSeal);
      ConstBuffer piece{bytes.data(), bytes.size()};
      if (!pair.a->send({&piece, 1}, Timeout(5))) break;
    }
    peers.push_back(std::move(pair.a));
    return std::move(pair.b);
  };
  auto s = Session::connect_with(dial, config, fuzz::fuzz_table());
  if (s) {
    const Negotiated& n = s->negotiated();
    FUZZ_CHECK(s->bulk_count() == config.bulk_channels);
    FUZZ_CHECK(n.version >= config.version_min && n.version <= config.version_max);
    FUZZ_CHECK((n.codecs & ~config.codecs) == 0 && (n.codecs & (1u << unsigned(Codec::raw))));
  }
  return 0;
}

#ifndef LM_LIBFUZZER
namespace {
// A destination that answers every channel: hello, then accept.
FuzzInput destination_input(uint8_t cfg, uint16_t version, uint32_t codecs) {
  FuzzInput s = {cfg};
  const uint16_t bulk = uint16_t(1 + (cfg & 3) % 3);
  for (int ch = 0; ch < 2 + bulk; ++ch) {
    HelloBody h{};
    h.version_min = kProtocolVersionMin;
    h.version_max = version;
    h.page_size = uint32_t(kPageSize);
    h.features = kFeatureDirtyBitmap;
    h.codecs = codecs;
    h.bulk_channels = bulk;
    h.session_id = 0xabcdef;
    OutMessage m;
    s.push_back(2);
    encode_hello(m, h);
    fuzz::append_record(s, fuzz::flatten(m));
    encode_accept(m, version, AcceptBody{version, 0, codecs, kFeatureDirtyBitmap});
    fuzz::append_record(s, fuzz::flatten(m));
  }
  return s;
}
}  // namespace

std::vector<FuzzInput> fuzz_seeds() {
  return {destination_input(0, 2, 0x7f), destination_input(1, 2, 0x0b), destination_input(2, 1, 0x01),
          destination_input(8 | 4, 1, 0x7f)};
}
#endif

// The destination's handshake (SessionAcceptor) fed by a fake source over
// in-process channels. Input: config u8 (bit 0: a pre-shared key is set,
// bit 1: the destination speaks only version 1), then up to 8 channels,
// each: flags u8 (bit 0: the fake source stays connected, so the
// destination's waits time out instead of seeing it vanish), message count
// u8, that many records (fuzz_wire.hpp). Timeouts are a few milliseconds.
#include "fuzz_wire.hpp"
#include "transport/session.hpp"

using namespace lm;
using namespace lm::transport;

namespace {

constexpr uint8_t kKeepPeer = 1;

void check_session(const Session& s) {
  const Negotiated& n = s.negotiated();
  FUZZ_CHECK(n.bulk_channels > 0 && s.bulk_count() == n.bulk_channels);
  FUZZ_CHECK(n.version >= kProtocolVersionMin && n.version <= kProtocolVersionMax);
  FUZZ_CHECK(n.codecs & (1u << unsigned(Codec::raw)));
  auto& ms = const_cast<Session&>(s);
  (void)ms.control().name(), (void)ms.priority().name();
  for (size_t i = 0; i < ms.bulk_count(); ++i) (void)ms.bulk(i).name();
  for (const auto& e : s.mappings().entries()) FUZZ_CHECK(s.mappings().contains(e.start));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::InputReader in(data, size);
  const uint8_t cfg = in.u8();
  SessionConfig config;
  if (cfg & 1) config.psk = "fuzz-key";
  if (cfg & 2) config.version_max = 1;
  config.handshake_timeout = Timeout(5);
  config.channel.max_message = 1 << 20;
  SessionAcceptor acceptor(config);
  std::vector<std::unique_ptr<Channel>> peers;  // fake sources kept connected
  std::vector<uint64_t> storage;
  for (int ch = 0; ch < 8 && !in.empty(); ++ch) {
    const uint8_t flags = in.u8();
    const unsigned count = in.u8() % 8;
    auto pair = make_inproc_pair(config.channel, "fuzz");
    for (unsigned i = 0; i < count; ++i) {
      fuzz::Record r = fuzz::next_record(in);
      auto bytes = fuzz::stage(storage, r.bytes, r.flags & fuzz::kSeal);
      ConstBuffer piece{bytes.data(), bytes.size()};
      if (!pair.a->send({&piece, 1}, Timeout(5))) break;
    }
    if (flags & kKeepPeer) peers.push_back(std::move(pair.a));
    else pair.a.reset();  // the source vanishes after its messages
    auto joined = acceptor.offer(std::move(pair.b));
    if (joined && joined->has_value()) check_session(**joined);
  }
  return 0;
}

#ifndef LM_LIBFUZZER
namespace {
FuzzInput session_input(uint8_t cfg, uint16_t version, uint16_t bulk) {
  FuzzInput s = {cfg};
  auto channel = [&](ChannelRole role, uint16_t index) {
    HelloBody h{};
    h.version_min = kProtocolVersionMin;
    h.version_max = version;
    h.page_size = uint32_t(kPageSize);
    h.features = kFeatureDirtyBitmap | kFeaturePostCopy | kFeatureDigest;
    h.codecs = (1u << kCodecCount) - 1;
    h.bulk_channels = bulk;
    h.role = uint8_t(role);
    h.index = index;
    h.session_id = 0xabcdef;
    OutMessage m;
    const bool control = role == ChannelRole::control;
    s.push_back(0);
    s.push_back(control ? 3 : 2);
    encode_hello(m, h);
    fuzz::append_record(s, fuzz::flatten(m));
    encode_auth(m, version, AuthBody{});
    fuzz::append_record(s, fuzz::flatten(m));
    if (control) {
      encode_mappings(m, version, fuzz::fuzz_table());
      fuzz::append_record(s, fuzz::flatten(m));
    }
  };
  channel(ChannelRole::control, 0);
  channel(ChannelRole::priority, 0);
  for (uint16_t i = 0; i < bulk; ++i) channel(ChannelRole::bulk, i);
  return s;
}
}  // namespace

// Whole sessions a real source would open (the key check fails with cfg bit 0).
std::vector<FuzzInput> fuzz_seeds() {
  return {session_input(0, 2, 1), session_input(0, 1, 2), session_input(2, 2, 3), session_input(1, 2, 1)};
}
#endif

#include "fuzz_wire.hpp"

#include <algorithm>
#include <cstring>

namespace lm::fuzz {

using namespace lm::transport;

std::span<const uint8_t> InputReader::take(size_t n) {
  n = std::min(n, size_ - std::min(pos_, size_));
  std::span<const uint8_t> s(data_ + pos_, n);
  pos_ += n;
  return s;
}

Record next_record(InputReader& in) {
  Record r;
  r.flags = in.u8();
  r.bytes = in.take(in.u16());
  return r;
}

void append_record(FuzzInput& out, std::span<const uint8_t> message, uint8_t flags) {
  out.push_back(flags);
  out.push_back(uint8_t(message.size()));
  out.push_back(uint8_t(message.size() >> 8));
  out.insert(out.end(), message.begin(), message.end());
}

std::vector<uint8_t> flatten(const OutMessage& m) {
  std::vector<uint8_t> out;
  for (const ConstBuffer& p : m.pieces()) {
    auto* b = static_cast<const uint8_t*>(p.data);
    out.insert(out.end(), b, b + p.size);
  }
  return out;
}

std::span<const std::byte> stage(std::vector<uint64_t>& storage, std::span<const uint8_t> bytes, bool seal) {
  storage.assign((bytes.size() + 7) / 8, 0);
  auto* p = reinterpret_cast<std::byte*>(storage.data());
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  if (seal && bytes.size() >= sizeof(MsgHeader)) {
    MsgHeader h;
    std::memcpy(&h, p, sizeof h);
    h.length = uint32_t(bytes.size());
    h.checksum = 0;
    std::memcpy(p, &h, sizeof h);
    // As the encoder: version 4 may leave a tail out (parse_message refuses one too long).
    const size_t unchecked = h.version >= 4 && h.unchecked <= bytes.size() - sizeof h ? h.unchecked : 0;
    ConstBuffer covered{p, bytes.size() - unchecked};
    h.checksum = checksum64({&covered, 1});
    std::memcpy(p, &h, sizeof h);
  }
  return {p, bytes.size()};
}

const MappingTable& fuzz_table() {
  static const MappingTable table = [] {
    std::vector<MappingEntry> e = {
        {0x10000, 0x20000, 3, 0},
        {0x7f0000000000, 0x7f0000100000, 1, 0},
        {0xfffffffffff00000, 0xfffffffffffff000, 3, 0},
    };
    auto t = MappingTable::make(std::move(e), 1);
    FUZZ_CHECK(t.ok());
    return std::move(*t);
  }();
  return table;
}

namespace {

void check_table(const MappingTable& t) {
  const auto& e = t.entries();
  FUZZ_CHECK(e.size() <= kMaxMappings);
  for (size_t i = 0; i < e.size(); ++i) {
    FUZZ_CHECK(e[i].start % kPageSize == 0 && e[i].end % kPageSize == 0 && e[i].start < e[i].end);
    FUZZ_CHECK(i == 0 || e[i - 1].end <= e[i].start);
    FUZZ_CHECK(t.contains(e[i].start) && t.contains(e[i].end - kPageSize));
  }
}

void check_batch(const PageBatchView& v, const MappingTable& table, uint32_t codecs) {
  FUZZ_CHECK(v.entries.size() <= kMaxBatchPages);
  uint64_t sum = 0;
  for (const PageEntry& e : v.entries) {
    FUZZ_CHECK(table.contains(e.addr));
    FUZZ_CHECK(unsigned(e.codec) < kCodecCount && (codecs & (1u << unsigned(e.codec))));
    FUZZ_CHECK(e.codec != Codec::raw || e.length == kPageSize);
    sum += e.length;
  }
  FUZZ_CHECK(sum == v.payload.size());
}

}  // namespace

void decode_all(const Message& m, const MappingTable& table, uint32_t codecs) {
  if (auto h = decode_hello(m)) {
    FUZZ_CHECK(h->role <= uint8_t(ChannelRole::bulk) && h->version_min <= h->version_max);
    FUZZ_CHECK(h->role != uint8_t(ChannelRole::bulk) || h->index < h->bulk_channels);
  }
  (void)decode_auth(m);
  (void)decode_accept(m);
  if (auto t = decode_mappings(m)) check_table(*t);
  if (auto b = decode_page_batch(m, table, codecs)) check_batch(*b, table, codecs);
  (void)decode_round_end(m);
  if (auto d = decode_dirty_bitmap(m, table)) {
    FUZZ_CHECK(d->bits.size() == (d->pages + 7) / 8);
    FUZZ_CHECK(d->start % kPageSize == 0);  // DirtyBitmapBody::start is page aligned
    FUZZ_CHECK(d->pages == 0 || table.contains_range(d->start, d->start + d->pages * kPageSize));
  }
  if (auto x = decode_exec_state(m)) FUZZ_CHECK(x->state.size() == m.body.size() - sizeof(ExecStateBody));
  if (auto r = decode_page_request(m, table)) {
    FUZZ_CHECK(r->addrs.size() <= kMaxRequestPages);
    for (uint64_t a : r->addrs) FUZZ_CHECK(table.contains(a));
  }
  (void)decode_event(m);
  (void)decode_ready(m);
  if (auto d = decode_digest(m, table))
    for (const DigestEntry& e : *d) FUZZ_CHECK(e.start % kPageSize == 0 && table.contains_range(e.start, e.end));
  if (auto e = decode_error(m)) FUZZ_CHECK(e->text.size() == m.body.size() - sizeof(ErrorBody));
  (void)decode_close(m);
  if (m.type == MsgType::error) (void)peer_error(m, "fuzz");
  (void)msg_type_name(m.type);
}

std::vector<std::vector<uint8_t>> valid_messages(uint16_t version) {
  std::vector<std::vector<uint8_t>> out;
  OutMessage m;
  auto add = [&] { out.push_back(flatten(m)); };
  HelloBody hello{};
  hello.version_min = kProtocolVersionMin;
  hello.version_max = version;
  hello.page_size = uint32_t(kPageSize);
  hello.features = kFeatureDirtyBitmap | kFeatureDigest;
  hello.codecs = (1u << kCodecCount) - 1;
  hello.bulk_channels = 2;
  hello.role = uint8_t(ChannelRole::bulk);
  hello.index = 1;
  hello.session_id = 0x1234;
  encode_hello(m, hello), add();
  encode_auth(m, version, AuthBody{}), add();
  encode_accept(m, version, AcceptBody{version, 0, 7, 1}), add();
  encode_mappings(m, version, fuzz_table()), add();
  static const uint8_t raw_page[kPageSize] = {1, 2, 3};
  const uint64_t uniform = 0x0101010101010101ull;
  std::vector<std::byte> payload(kPageSize + 8);
  std::memcpy(payload.data(), raw_page, kPageSize);
  std::memcpy(payload.data() + kPageSize, &uniform, 8);
  const PageEntry entries[] = {{0x10000, uint32_t(kPageSize), Codec::raw, 0, 0},
                               {0x11000, 0, Codec::zero, 0, 0},
                               {0xffffffffffffe000, 8, Codec::uniform, 0, 0}};
  encode_page_batch(m, version, 3, entries, payload), add();
  encode_page_batch(m, version, 3, entries, payload, PayloadCheck::digest), add();
  encode_page_reply(m, version, 9, std::span(entries, 1), std::span(payload).first(kPageSize)), add();
  encode_round_end(m, version, RoundEndBody{2, kRoundEndFinal, 3, 4096, 1, 5, 1000, 1}), add();
  const uint8_t bits[2] = {0xff, 0x01};
  encode_dirty_bitmap(m, version, 0x10000, 9, bits), add();
  const std::byte state[5] = {};
  encode_exec_state(m, version, 1, state), add();
  const uint64_t addrs[] = {0x10000, 0x7f0000000000};
  encode_page_request(m, version, 5, addrs), add();
  ReadyBody ready{{100, 16}, 5, {}};
  std::memcpy(ready.memory.data(), "anon-thp", 8);
  encode_ready(m, version, ready), add();
  encode_event(m, version, MsgType::resumed, EventBody{200, 16}), add();
  const DigestEntry digests[] = {{0x10000, 0x12000, 42}, {0x7f0000000000, 0x7f0000001000, 7}};
  encode_digest(m, version, digests), add();
  encode_error(m, version, 5, "disk on fire"), add();
  encode_close(m, version, kCloseDone), add();
  return out;
}

}  // namespace lm::fuzz

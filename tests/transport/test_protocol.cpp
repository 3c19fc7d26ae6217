// Wire protocol: encode/decode of every message type, checksums, and the
// validation of lengths, counts, codecs and page addresses.
#include <cstring>

#include "tests/transport/helpers.hpp"
#include "transport/protocol.hpp"

namespace lm::transport {
namespace {

// A received message as the channel would hand it over: contiguous, 8-aligned.
struct Flat {
  std::vector<uint64_t> storage;
  size_t size = 0;
  std::span<std::byte> bytes() { return {reinterpret_cast<std::byte*>(storage.data()), size}; }
};

Flat flatten(const OutMessage& m) {
  Flat f;
  f.size = m.size();
  f.storage.resize((f.size + 7) / 8);
  size_t at = 0;
  for (const auto& p : m.pieces()) {
    std::memcpy(reinterpret_cast<char*>(f.storage.data()) + at, p.data, p.size);
    at += p.size;
  }
  return f;
}

constexpr uint64_t kBase = 0x7f0000000000;
constexpr uint32_t kAllCodecs = (1u << kCodecCount) - 1;

MappingTable table() {
  auto t = MappingTable::make({{kBase, kBase + 64 * kPageSize, 3, 0}, {kBase + 128 * kPageSize, kBase + 160 * kPageSize, 3, 0}});
  EXPECT_TRUE(t.ok());
  return *t;
}

Message parse_ok(Flat& f) {
  auto m = parse_message(f.bytes(), "test");
  EXPECT_TRUE(m.ok()) << m.error().message;
  return *m;
}

struct Batch {
  std::vector<PageEntry> entries;
  std::vector<std::byte> payload;
};

Batch sample_batch() {
  Batch b;
  for (int i = 0; i < 5; ++i) {
    Codec c = i % 2 ? Codec::zero : Codec::raw;
    uint32_t len = c == Codec::raw ? uint32_t(kPageSize) : 0;
    b.entries.push_back({kBase + uint64_t(i) * kPageSize, len, c, 0, 0});
    size_t at = b.payload.size();
    b.payload.resize(at + len);
    testing::fill_pattern(b.payload.data() + at, len, i);
  }
  return b;
}

TEST(Protocol, PageBatchRoundTripKeepsEntriesAndPayloadAsSeparatePieces) {
  Batch b = sample_batch();
  OutMessage m;
  encode_page_batch(m, 1, 7, b.entries, b.payload);
  // header+body, entries, payload: the compressor's buffers are not copied.
  ASSERT_EQ(m.pieces().size(), 3u);
  EXPECT_EQ(m.pieces()[1].data, b.entries.data());
  EXPECT_EQ(m.pieces()[2].data, b.payload.data());
  Flat f = flatten(m);
  Message msg = parse_ok(f);
  auto v = decode_page_batch(msg, table(), kAllCodecs);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->id, 7u);
  ASSERT_EQ(v->entries.size(), b.entries.size());
  for (size_t i = 0; i < b.entries.size(); ++i) {
    EXPECT_EQ(v->entries[i].addr, b.entries[i].addr);
    EXPECT_EQ(v->entries[i].codec, b.entries[i].codec);
  }
  ASSERT_EQ(v->payload.size(), b.payload.size());
  EXPECT_EQ(std::memcmp(v->payload.data(), b.payload.data(), b.payload.size()), 0);
}

TEST(Protocol, EveryMessageTypeRoundTrips) {
  MappingTable t = table();
  OutMessage m;
  {
    encode_mappings(m, 1, t);
    Flat f = flatten(m);
    auto d = decode_mappings(parse_ok(f));
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->entries().size(), 2u);
    EXPECT_TRUE(d->contains(kBase + 130 * kPageSize));
  }
  {
    RoundEndBody r{3, 1, 100, 409600, 5, 120, 999, 4};
    encode_round_end(m, 1, r);
    Flat f = flatten(m);
    auto d = decode_round_end(parse_ok(f));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->round, 3u);
    EXPECT_EQ(d->bytes, 409600u);
  }
  {
    std::vector<uint8_t> bits{0xff, 0x01};
    encode_dirty_bitmap(m, 1, kBase, 9, bits);
    Flat f = flatten(m);
    auto d = decode_dirty_bitmap(parse_ok(f), t);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->pages, 9u);
    EXPECT_EQ(d->bits[1], 0x01);
  }
  {
    std::vector<std::byte> state(300, std::byte{0x5a});
    encode_exec_state(m, 1, 1, state);
    Flat f = flatten(m);
    auto d = decode_exec_state(parse_ok(f));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->state.size(), 300u);
  }
  {
    std::vector<uint64_t> addrs{kBase, kBase + 129 * kPageSize};
    encode_page_request(m, 1, 55, addrs);
    Flat f = flatten(m);
    auto d = decode_page_request(parse_ok(f), t);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->request_id, 55u);
    EXPECT_EQ(d->addrs[1], kBase + 129 * kPageSize);
  }
  {
    Batch b = sample_batch();
    encode_page_reply(m, 1, 55, b.entries, b.payload);
    Flat f = flatten(m);
    Message msg = parse_ok(f);
    EXPECT_EQ(msg.type, MsgType::page_reply);
    auto d = decode_page_batch(msg, t, kAllCodecs);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->id, 55u);
  }
  for (MsgType ev : {MsgType::ready, MsgType::resumed}) {
    encode_event(m, 1, ev, EventBody{123, 4});
    Flat f = flatten(m);
    Message msg = parse_ok(f);
    EXPECT_EQ(msg.type, ev);
    auto d = decode_event(msg);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->time_ns, 123u);
  }
  {
    std::vector<DigestEntry> dg{{kBase, kBase + 8 * kPageSize, 0xabcdef}};
    encode_digest(m, 1, dg);
    Flat f = flatten(m);
    auto d = decode_digest(parse_ok(f), t);
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ((*d)[0].hash, 0xabcdefu);
  }
  {
    encode_error(m, 1, ENOSPC, "destination out of memory");
    Flat f = flatten(m);
    Message msg = parse_ok(f);
    Error e = peer_error(msg, "control");
    EXPECT_EQ(e.code, ENOSPC);
    EXPECT_NE(e.message.find("destination out of memory"), std::string::npos) << e.message;
    EXPECT_NE(e.message.find("control"), std::string::npos) << e.message;
  }
  {
    encode_close(m, 1, 0);
    Flat f = flatten(m);
    auto d = decode_close(parse_ok(f));
    ASSERT_TRUE(d.ok());
  }
  {
    encode_round_end(m, 1, RoundEndBody{});
    Flat f = flatten(m);
    auto wrong = decode_close(parse_ok(f));
    ASSERT_FALSE(wrong.ok());
    EXPECT_NE(wrong.error().message.find("expected a close message, got round_end"), std::string::npos)
        << wrong.error().message;
  }
}

// A flipped byte anywhere is a checksum error that names the channel it came in on.
TEST(Protocol, FlippedByteInHeaderOrPayloadIsChecksumErrorNamingChannel) {
  Batch b = sample_batch();
  OutMessage m;
  encode_page_batch(m, 1, 1, b.entries, b.payload);
  size_t size = m.size();
  for (size_t pos : {size_t(5), size_t(12), sizeof(MsgHeader) + 3, size - 1, size / 2}) {
    Flat f = flatten(m);
    f.bytes()[pos] ^= std::byte{0x10};
    auto [tx, rx] = make_inproc_pair(ChannelOptions{}, "bulk3");
    ConstBuffer piece{f.bytes().data(), f.size};
    ASSERT_TRUE(send_sync(*tx, {&piece, 1}, Timeout(1000)).ok());
    auto r = recv_message(*rx, Timeout(1000));
    ASSERT_FALSE(r.ok()) << "flip at " << pos << " not detected";
    EXPECT_NE(r.error().message.find("checksum mismatch"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("bulk3"), std::string::npos) << r.error().message;
  }
  // Magic and length are checked before the checksum and say so.
  Flat f = flatten(m);
  f.bytes()[0] ^= std::byte{1};
  auto r = parse_message(f.bytes(), "bulk0");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("magic"), std::string::npos) << r.error().message;
}

// From version 4 a page batch whose payload the digests check leaves it out
// of the checksum; every other byte stays checked, version 3 checks them all.
TEST(Protocol, DigestCheckedPayloadIsLeftOutOfTheChecksumFromVersion4) {
  Batch b = sample_batch();
  OutMessage m;
  encode_page_batch(m, 4, 1, b.entries, b.payload, PayloadCheck::digest);
  const size_t size = m.size();
  const size_t payload_at = size - b.payload.size();
  {
    Flat f = flatten(m);
    MsgHeader h;
    std::memcpy(&h, f.bytes().data(), sizeof h);
    EXPECT_EQ(h.unchecked, b.payload.size());
  }
  // Header, body and entries: a checksum error.
  for (size_t pos : {size_t(5), size_t(12), sizeof(MsgHeader) + 3, payload_at - 1}) {
    Flat f = flatten(m);
    f.bytes()[pos] ^= std::byte{0x10};
    auto r = parse_message(f.bytes(), "bulk1");
    ASSERT_FALSE(r.ok()) << "flip at " << pos << " not detected";
    EXPECT_NE(r.error().message.find("bulk1"), std::string::npos) << r.error().message;
  }
  // The payload: received as it came, for the digests to find.
  for (size_t pos : {payload_at, size - 1}) {
    Flat f = flatten(m);
    f.bytes()[pos] ^= std::byte{0x10};
    auto v = decode_page_batch(parse_ok(f), table(), kAllCodecs);
    ASSERT_TRUE(v.ok()) << v.error().message;
    EXPECT_NE(std::memcmp(v->payload.data(), b.payload.data(), b.payload.size()), 0);
  }
  // A header that would leave out more than the body is refused, checksum or not.
  {
    Flat f = flatten(m);
    MsgHeader h;
    std::memcpy(&h, f.bytes().data(), sizeof h);
    h.unchecked = uint32_t(size);
    std::memcpy(f.bytes().data(), &h, sizeof h);
    auto r = parse_message(f.bytes(), "bulk1");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("corrupt header"), std::string::npos) << r.error().message;
  }
  // Version 3 has no such field: the same request checks the payload too.
  OutMessage v3;
  encode_page_batch(v3, 3, 1, b.entries, b.payload, PayloadCheck::digest);
  Flat f = flatten(v3);
  f.bytes()[f.size - 1] ^= std::byte{0x10};
  auto r = parse_message(f.bytes(), "bulk1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("checksum mismatch"), std::string::npos) << r.error().message;
}

TEST(Protocol, TruncatedMessageRejected) {
  Batch b = sample_batch();
  OutMessage m;
  encode_page_batch(m, 1, 1, b.entries, b.payload);
  Flat f = flatten(m);
  auto r = parse_message(f.bytes().first(f.size - 100), "bulk1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("length"), std::string::npos) << r.error().message;
  auto r2 = parse_message(f.bytes().first(10), "bulk1");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message.find("truncated"), std::string::npos) << r2.error().message;
}

TEST(Protocol, PageOutsideAnnouncedMappingsRejected) {
  Batch b = sample_batch();
  b.entries[3].addr = kBase + 100 * kPageSize;  // in the gap between the two mappings
  OutMessage m;
  encode_page_batch(m, 1, 1, b.entries, b.payload);
  Flat f = flatten(m);
  auto v = decode_page_batch(parse_ok(f), table(), kAllCodecs);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message.find("outside the announced mappings"), std::string::npos) << v.error().message;

  std::vector<uint64_t> addrs{kBase + 4096 * kPageSize};
  encode_page_request(m, 1, 1, addrs);
  Flat f2 = flatten(m);
  auto req = decode_page_request(parse_ok(f2), table());
  ASSERT_FALSE(req.ok());
  EXPECT_NE(req.error().message.find("outside the announced mappings"), std::string::npos);

  std::vector<uint8_t> bits(10);
  encode_dirty_bitmap(m, 1, kBase + 60 * kPageSize, 80, bits);  // runs past the first mapping
  Flat f3 = flatten(m);
  EXPECT_FALSE(decode_dirty_bitmap(parse_ok(f3), table()).ok());

  // Unaligned address inside a mapping.
  Batch u = sample_batch();
  u.entries[0].addr += 8;
  encode_page_batch(m, 1, 1, u.entries, u.payload);
  Flat f4 = flatten(m);
  EXPECT_FALSE(decode_page_batch(parse_ok(f4), table(), kAllCodecs).ok());
}

TEST(Protocol, InconsistentLengthsAndCodecsRejected) {
  MappingTable t = table();
  OutMessage m;
  {  // raw page with a short payload
    Batch b = sample_batch();
    b.entries[0].length = 100;
    encode_page_batch(m, 1, 1, b.entries, b.payload);
    Flat f = flatten(m);
    auto v = decode_page_batch(parse_ok(f), t, kAllCodecs);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message.find("length 100 invalid for codec raw"), std::string::npos) << v.error().message;
  }
  {  // lengths that do not add up to the payload
    Batch b = sample_batch();
    b.entries[2].codec = Codec::lz4;
    b.entries[2].length = 10;
    encode_page_batch(m, 1, 1, b.entries, b.payload);
    Flat f = flatten(m);
    auto v = decode_page_batch(parse_ok(f), t, kAllCodecs);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message.find("sum"), std::string::npos) << v.error().message;
  }
  {  // a codec the session did not negotiate
    Batch b = sample_batch();
    encode_page_batch(m, 1, 1, b.entries, b.payload);
    Flat f = flatten(m);
    auto v = decode_page_batch(parse_ok(f), t, 1u << unsigned(Codec::raw));
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message.find("not negotiated"), std::string::npos) << v.error().message;
  }
  {  // an unknown codec byte
    Batch b = sample_batch();
    b.entries[1].codec = Codec(200);
    encode_page_batch(m, 1, 1, b.entries, b.payload);
    Flat f = flatten(m);
    EXPECT_FALSE(decode_page_batch(parse_ok(f), t, kAllCodecs).ok());
  }
  {  // a count that claims more entries than the body holds
    Batch b = sample_batch();
    encode_page_batch(m, 1, 1, b.entries, b.payload);
    Flat f = flatten(m);
    PageBatchBody body;
    std::memcpy(&body, f.bytes().data() + sizeof(MsgHeader), sizeof body);
    body.count = 1000;
    std::memcpy(f.bytes().data() + sizeof(MsgHeader), &body, sizeof body);
    // Re-seal so only the semantic check can catch it.
    MsgHeader h;
    std::memcpy(&h, f.bytes().data(), sizeof h);
    h.checksum = 0;
    std::memcpy(f.bytes().data(), &h, sizeof h);
    ConstBuffer whole{f.bytes().data(), f.size};
    h.checksum = checksum64({&whole, 1});
    std::memcpy(f.bytes().data(), &h, sizeof h);
    auto v = decode_page_batch(parse_ok(f), t, kAllCodecs);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message.find("1000 page entries need"), std::string::npos) << v.error().message;
  }
}

TEST(MappingTableTest, RejectsOverlapAndMisalignmentAndLooksUp) {
  EXPECT_FALSE(MappingTable::make({{0x1000, 0x3000, 0, 0}, {0x2000, 0x4000, 0, 0}}).ok());
  EXPECT_FALSE(MappingTable::make({{0x1001, 0x3000, 0, 0}}).ok());
  EXPECT_FALSE(MappingTable::make({{0x3000, 0x3000, 0, 0}}).ok());
  auto t = MappingTable::make({{0x5000, 0x6000, 0, 0}, {0x1000, 0x3000, 0, 0}});
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->contains(0x1000));
  EXPECT_TRUE(t->contains(0x2000));
  EXPECT_FALSE(t->contains(0x3000));
  EXPECT_FALSE(t->contains(0x4000));
  EXPECT_TRUE(t->contains(0x5000));
  EXPECT_FALSE(t->contains(0x6000));
  EXPECT_FALSE(t->contains(0x1800));
  EXPECT_FALSE(t->contains_range(0x2000, 0x5000));
  EXPECT_EQ(t->total_bytes(), 0x3000u);
}

}  // namespace
}  // namespace lm::transport

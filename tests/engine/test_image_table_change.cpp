// Mapping tables that remove and replace mappings during an image migration
// (docs/protocol.md, "Pre-copy"): the real Destination with the real
// ImageSink over the in-process link, driven by a short scripted source. A
// removed mapping's region goes from the image, its hashes and the map; a
// mapping grown at the same start gets new memory that keeps its pages; pages
// of removed mappings still on a channel that has not seen the new table are
// ignored, those of the grown one written; the digests cover exactly the last
// table.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "compress/compressor.hpp"
#include "engine/destination.hpp"
#include "engine/digest.hpp"
#include "engine/image_sink.hpp"
#include "engine/messages.hpp"
#include "engine/source.hpp"
#include "transport/channel.hpp"
#include "transport/session.hpp"

namespace lm::engine::test {
namespace {

const transport::Timeout kWait(5000);

constexpr uint64_t kRemoved = 0x7e0000000000;   // 16 pages, gone in generation 1
constexpr uint64_t kReplaced = 0x7e0000200000;  // 16 pages, then 48 at the same start
constexpr uint64_t kKept = 0x7e0000400000;      // 8 pages, in both tables

TEST(DestinationMapRemove, FreesTheRangeForAnOverlappingRegion) {
  std::vector<uint8_t> a(4 * kPageSize), b(8 * kPageSize);
  compress::DestinationMap map;
  ASSERT_TRUE(map.add({kReplaced, a.size(), a.data()}).ok());
  EXPECT_FALSE(map.add({kReplaced, b.size(), b.data()}).ok()) << "overlaps";
  EXPECT_FALSE(map.remove(kReplaced, b.size())) << "only the exact region is removed";
  EXPECT_TRUE(map.remove(kReplaced, a.size()));
  EXPECT_EQ(map.find(kReplaced), nullptr);
  ASSERT_TRUE(map.add({kReplaced, b.size(), b.data()}).ok());
  EXPECT_EQ(map.find(kReplaced + 5 * kPageSize), b.data() + 5 * kPageSize);
}

TEST(PageHashesRemove, DropsTheRangeAndItsReceivedPages) {
  PageHashes hashes({});
  hashes.add({kRemoved, kRemoved + 16 * kPageSize}, true);
  hashes.add({kKept, kKept + 8 * kPageSize}, true);
  ASSERT_TRUE(hashes.set(kKept, 1));
  const uint64_t kept_only = hashes.received_bytes();
  for (uint64_t i = 0; i < 16; i++) ASSERT_TRUE(hashes.set(kRemoved + i * kPageSize, i));
  EXPECT_GT(hashes.received_bytes(), kept_only);
  EXPECT_FALSE(hashes.remove({kRemoved, kRemoved + 8 * kPageSize}));
  EXPECT_TRUE(hashes.remove({kRemoved, kRemoved + 16 * kPageSize}));
  EXPECT_EQ(hashes.received_bytes(), kept_only);
  EXPECT_FALSE(hashes.set(kRemoved, 1));
  const auto digests = hashes.digests();
  ASSERT_EQ(digests.size(), 1u);
  EXPECT_EQ(digests[0].start, kKept);
}

// The source's memory per mapping; pages hold a pattern of their address and version.
struct Memory {
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> mappings;

  uint8_t* page(uint64_t addr) {
    for (auto& [start, bytes] : mappings)
      if (addr - start < bytes.size()) return bytes.data() + (addr - start);
    return nullptr;
  }
  void write(uint64_t addr, uint64_t version) {
    uint8_t* p = page(addr);
    for (uint64_t i = 0; i < kPageSize; i += 8) {
      const uint64_t word = (addr + i) * 0x9e3779b97f4a7c15ull + version;
      std::memcpy(p + i, &word, 8);
    }
  }
  transport::MappingTable table(uint32_t generation) const {
    std::vector<transport::MappingEntry> entries;
    for (const auto& [start, bytes] : mappings) entries.push_back({start, start + bytes.size(), 3, 0});
    std::sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.start < b.start; });
    return *transport::MappingTable::make(std::move(entries), generation);
  }
  std::vector<transport::DigestEntry> digests() {
    PageHashes hashes({});
    for (const auto& [start, bytes] : mappings) hashes.add({start, start + bytes.size()});
    for (auto& [start, bytes] : mappings)
      for (uint64_t off = 0; off < bytes.size(); off += kPageSize) hashes.set(start + off, page_hash(&bytes[off]));
    return hashes.digests();
  }
};

// Raw pages as `memory` holds them now, on bulk channel `channel`.
Result<void> send(transport::Session& session, size_t channel, Memory& memory, uint64_t round,
                  const std::vector<uint64_t>& pages) {
  std::vector<PageEntry> entries;
  std::vector<std::byte> payload;
  for (uint64_t a : pages) {
    entries.push_back({a, uint32_t(kPageSize), Codec::raw, 0, 0});
    const auto* p = reinterpret_cast<const std::byte*>(memory.page(a));
    payload.insert(payload.end(), p, p + kPageSize);
  }
  return Peer::bulk(session, channel, kWait).send(PageBatch{round, entries, payload});
}

Result<void> end_round(transport::Session& session, uint32_t round, uint32_t flags) {
  for (size_t c = 0; c < session.bulk_count(); c++)
    LM_TRY(Peer::bulk(session, c, kWait).send(RoundEnd{.round = round, .flags = flags}));
  return ok();
}

std::vector<uint64_t> pages_of(uint64_t start, uint64_t count, uint64_t step = 1) {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < count; i += step) out.push_back(start + i * kPageSize);
  return out;
}

// Round 0 fills three mappings on bulk channel 0. Then generation 1 removes
// one and grows another at the same start (a new, larger region): bulk 0
// hears it first; bulk 1, still on generation 0, brings pages written before
// the change (of the removed mapping: left out; of the grown and the kept
// one: written); then bulk 1 hears the table too and the grown part's pages
// follow.
Result<bool> script(transport::Dial dial, Memory& memory) {
  memory.mappings.push_back({kRemoved, std::vector<uint8_t>(16 * kPageSize)});
  memory.mappings.push_back({kReplaced, std::vector<uint8_t>(16 * kPageSize)});
  memory.mappings.push_back({kKept, std::vector<uint8_t>(8 * kPageSize)});
  transport::SessionConfig config;
  config.bulk_channels = 2;
  config.features &= ~uint64_t(transport::kFeaturePostCopy);
  auto session = LM_TRY(transport::Session::connect_with(dial, config, memory.table(0)));
  const Peer control = Peer::control(session, kWait);
  LM_TRY(control.expect<Ready>());
  std::vector<uint64_t> round0 = pages_of(kRemoved, 16);
  for (uint64_t a : pages_of(kReplaced, 16)) round0.push_back(a);
  for (uint64_t a : pages_of(kKept, 8)) round0.push_back(a);
  for (uint64_t a : round0) memory.write(a, 0);
  LM_TRY(send(session, 0, memory, 0, round0));
  LM_TRY(end_round(session, 0, 0));

  // Stale pages as the source read them before the change.
  const std::vector<uint64_t> stale = {kRemoved + 3 * kPageSize, kReplaced + 5 * kPageSize, kKept + kPageSize};
  memory.write(kKept + kPageSize, 1);
  memory.write(kReplaced + 5 * kPageSize, 1);
  Memory before = memory;
  memory.mappings.erase(memory.mappings.begin());
  memory.mappings[0].second.resize(48 * kPageSize);  // grown in place: it keeps its pages
  const Mappings next{memory.table(1)};
  LM_TRY(Peer::bulk(session, 0, kWait).send(next));
  LM_TRY(control.send(next));
  usleep(200 * 1000);  // bulk 0's receiver adopts generation 1 before bulk 1's stale batch arrives
  LM_TRY(send(session, 1, before, 1, stale));
  LM_TRY(Peer::bulk(session, 1, kWait).send(next));
  session.set_mappings(memory.table(1));
  const std::vector<uint64_t> replacement = pages_of(kReplaced + 16 * kPageSize, 32, 3);
  for (uint64_t a : replacement) memory.write(a, 2);
  LM_TRY(send(session, 1, memory, 1, replacement));
  LM_TRY(end_round(session, 1, kRoundEndFinal));

  LM_TRY(control.send(ExecState{uint32_t(ExecStateKind::image), {}}));
  auto digest = LM_TRY(control.expect<Digest>());
  const auto mine = memory.digests();
  auto same = compare_digests(mine, digest.entries);
  if (!same) ADD_FAILURE() << same.error().message;
  LM_TRY(control.expect<Ready>());
  if (!same) {
    control.send_error(Error::msg("test source: digests differ"));
    return false;
  }
  LM_TRY(control.send(Close{}));
  LM_TRY(session.close(transport::Timeout(2000)));
  return true;
}

TEST(ImageTableChange, RemovedAndReplacedMappingsLeaveTheImage) {
  auto sink = std::make_shared<ImageSink>();
  DestinationOptions o;
  o.sink = sink;
  o.timeout = kWait;
  o.reconnect_timeout = transport::Timeout(0);
  auto link = transport::make_inproc_link(transport::ChannelOptions{}, "table-change");
  auto dest = Destination::over(std::move(link.listener), o);
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  std::optional<Result<DestinationOutcome>> outcome;
  std::thread dest_thread([&] { outcome = (*dest)->run(); });
  Memory memory;
  auto verified = script(link.dial, memory);
  dest_thread.join();
  ASSERT_TRUE(verified.ok()) << verified.error().message;
  EXPECT_TRUE(*verified);
  ASSERT_TRUE(outcome && outcome->ok()) << (outcome ? outcome->error().message : "no outcome");

  const std::vector<PageRange> held = sink->held();
  const auto& image = sink->image();
  ASSERT_EQ(image.size(), 2u);
  EXPECT_EQ(image[0].addr, kReplaced);
  EXPECT_EQ(image[0].bytes, 48 * kPageSize);
  EXPECT_EQ(image[1].addr, kKept);
  EXPECT_EQ(held.size(), 2u) << "the removed and the grown mapping's old memory is unmapped";
  for (const auto& r : held) EXPECT_NE(r.start, kRemoved);
  EXPECT_EQ(std::memcmp(image[0].data, memory.page(kReplaced), 48 * kPageSize), 0);
}

}  // namespace
}  // namespace lm::engine::test

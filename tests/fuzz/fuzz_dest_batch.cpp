// The destination's receive path for bulk data: a mapping table, then page
// batches (and re-announced tables), decoded by the engine's Wire decoders
// and admitted as the destination would before it allocates memory for the
// table, then decompressed into that memory (compress::Decompressor over a
// DestinationMap) with each page hashed, as receive_bulk does. Input:
// codecs u8 (raw always added), then records (fuzz_wire.hpp).
#include <cstring>
#include <map>
#include <memory>

#include "compress/codec.hpp"
#include "compress/compressor.hpp"
#include "engine/admission.hpp"
#include "engine/digest.hpp"
#include "engine/messages.hpp"
#include "fuzz_wire.hpp"

using namespace lm;
using namespace lm::transport;

namespace {

// Admission: the destination's own check (engine/admission.hpp) with a RAM
// limit small enough for a fuzzer, so what it lets through is what is fuzzed.
constexpr uint64_t kMaxRamBytes = uint64_t(1) << 20;
constexpr uint64_t kMemAvailable = uint64_t(1) << 30;  // fixed: the check must not depend on the host

struct Free {
  void operator()(uint8_t* p) const { std::free(p); }
};

// Destination memory for one mapping table: one zeroed block per mapping.
struct Memory {
  MappingTable table;
  std::vector<std::unique_ptr<uint8_t, Free>> blocks;
  compress::DestinationMap map;
};

Result<std::unique_ptr<Memory>> admit(MappingTable table) {
  engine::LimitsConfig limits;
  limits.max_ram_bytes = kMaxRamBytes;
  LM_TRY(engine::check_admission(limits, {table.total_bytes(), table.entries().size(), 1}, kMemAvailable));
  auto mem = std::make_unique<Memory>();
  for (const MappingEntry& e : table.entries()) {
    const size_t bytes = e.end - e.start;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(kPageSize, bytes));
    std::memset(p, 0, bytes);
    mem->blocks.emplace_back(p);
    LM_TRY(mem->map.add({e.start, bytes, p}));
  }
  mem->table = std::move(table);
  return mem;
}

void receive(const std::unique_ptr<Memory>& mem, std::span<const PageEntry> entries,
             std::span<const std::byte> payload, compress::Decompressor& decompressor) {
  uint64_t hashed = 0;
  compress::PageVisitor hash = [&](const PageEntry&, const uint8_t* bytes) { hashed ^= engine::page_hash(bytes); };
  const std::span<const uint8_t> bytes{reinterpret_cast<const uint8_t*>(payload.data()), payload.size()};
  if (!decompressor.decompress_batch(entries, bytes, mem->map, hash)) return;
  // A raw page sent once in the batch is now in memory as it was sent.
  std::map<uint64_t, unsigned> seen;
  for (const PageEntry& e : entries) seen[e.addr]++;
  size_t at = 0;
  for (const PageEntry& e : entries) {
    uint8_t* page = mem->map.find(e.addr);
    FUZZ_CHECK(page != nullptr);
    if (e.codec == Codec::raw && seen[e.addr] == 1) FUZZ_CHECK(std::memcmp(page, bytes.data() + at, kPageSize) == 0);
    at += e.length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::InputReader in(data, size);
  const uint32_t codecs = in.u8() | 1u;
  std::unique_ptr<Memory> mem;
  compress::Decompressor decompressor;
  std::vector<uint64_t> storage;
  while (!in.empty()) {
    fuzz::Record r = fuzz::next_record(in);
    auto m = parse_message(fuzz::stage(storage, r.bytes, r.flags & fuzz::kSeal), "fuzz");
    if (!m) continue;
    if (m->type == MsgType::mappings) {
      auto t = engine::Wire<engine::Mappings>::decode(*m, {});
      if (!t) continue;
      auto admitted = admit(std::move(t->table));
      if (admitted) mem = std::move(*admitted);
      continue;
    }
    if (!mem) continue;  // batches before a table: the destination refuses them
    const engine::Inbound inbound{&mem->table, codecs};
    if (m->type == MsgType::page_reply) {
      if (auto b = engine::Wire<engine::PageReply>::decode(*m, inbound)) receive(mem, b->entries, b->payload, decompressor);
    } else if (auto b = engine::Wire<engine::PageBatch>::decode(*m, inbound)) {
      receive(mem, b->entries, b->payload, decompressor);
    }
  }
  return 0;
}

#ifndef LM_LIBFUZZER
// A small table and a batch with a page of every codec, as the source encodes them.
std::vector<FuzzInput> fuzz_seeds() {
  auto table = MappingTable::make({{0x10000, 0x18000, 3, 0}, {0x40000, 0x41000, 3, 0}}, 1);
  FUZZ_CHECK(table.ok());
  OutMessage m;
  FuzzInput mappings;
  encode_mappings(m, kProtocolVersionMax, *table);
  fuzz::append_record(mappings, fuzz::flatten(m));

  compress::CodecContext ctx;
  std::vector<uint8_t> page(kPageSize), zeros(kPageSize, 0), out(2 * kPageSize);
  std::vector<PageEntry> entries;
  std::vector<std::byte> payload;
  for (unsigned c = 0; c < kCodecCount; ++c) {
    for (size_t i = 0; i < kPageSize; ++i) page[i] = uint8_t(c == 2 ? 7 : (i % 64 < 8 ? i * c : 0));
    if (c == 1) std::fill(page.begin(), page.end(), 0);
    size_t len = compress::encode_page(Codec(c), {}, ctx, page.data(), zeros.data(), out.data(), out.size());
    FUZZ_CHECK(len != compress::kDoesNotFit);
    entries.push_back({0x10000 + c * kPageSize, uint32_t(len), Codec(c), 0, 0});
    const auto* b = reinterpret_cast<const std::byte*>(out.data());
    payload.insert(payload.end(), b, b + len);
  }
  std::vector<FuzzInput> seeds;
  FuzzInput s = {0x7f};
  s.insert(s.end(), mappings.begin(), mappings.end());
  encode_page_batch(m, kProtocolVersionMax, 1, entries, payload);
  fuzz::append_record(s, fuzz::flatten(m));
  encode_page_reply(m, kProtocolVersionMax, 4, std::span(entries).first(1), std::span(payload).first(kPageSize));
  fuzz::append_record(s, fuzz::flatten(m));
  seeds.push_back(s);
  s[0] = 0x03;  // raw and zero only: the other pages are refused
  seeds.push_back(s);
  return seeds;
}
#endif

#include "compress/stats.hpp"

#include "common/json.hpp"

namespace lm::compress {

CodecCounters CompressStats::codec_total(Codec c) const {
  CodecCounters t;
  for (const auto& cc : by_codec_class[unsigned(c)]) t += cc;
  return t;
}

CodecCounters CompressStats::total() const {
  CodecCounters t;
  for (unsigned c = 0; c < kCodecCount; c++) t += codec_total(Codec(c));
  return t;
}

CompressStats& CompressStats::operator+=(const CompressStats& o) {
  for (unsigned c = 0; c < kCodecCount; c++)
    for (unsigned k = 0; k < kStatClasses; k++) by_codec_class[c][k] += o.by_codec_class[c][k];
  fallbacks_to_raw += o.fallbacks_to_raw;
  delta_hits += o.delta_hits;
  delta_misses += o.delta_misses;
  explore_pages += o.explore_pages;
  explore_ns += o.explore_ns;
  return *this;
}

static void counters_json(JsonWriter& w, const CodecCounters& c) {
  w.field("pages", c.pages).field("bytes-in", c.bytes_in).field("bytes-out", c.bytes_out);
  w.field("cpu-ns", c.ns);
  w.field("ratio", c.bytes_out ? double(c.bytes_in) / double(c.bytes_out) : 0.0);
}

void CompressStats::write_json(JsonWriter& w, const char* key) const {
  w.begin_object(key);
  counters_json(w, total());
  w.field("fallbacks-to-raw", fallbacks_to_raw).field("delta-hits", delta_hits);
  w.field("delta-misses", delta_misses).field("explore-pages", explore_pages).field("explore-ns", explore_ns);
  w.begin_object("codecs");
  for (unsigned c = 0; c < kCodecCount; c++) {
    CodecCounters t = codec_total(Codec(c));
    if (!t.pages) continue;
    w.begin_object(codec_name(Codec(c)));
    counters_json(w, t);
    w.begin_object("classes");
    for (unsigned k = 0; k < kStatClasses; k++) {
      const CodecCounters& cc = by_codec_class[c][k];
      if (!cc.pages) continue;
      w.begin_object(k == kUnclassified ? std::string_view("unclassified") : class_name(PageClass(k)));
      counters_json(w, cc);
      w.end_object();
    }
    w.end_object();
    w.end_object();
  }
  w.end_object();
  w.end_object();
}

}  // namespace lm::compress

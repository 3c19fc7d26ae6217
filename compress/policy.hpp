// Compression policies: which codec each page gets.
//   fixed:<codec>[:<param>]  one codec for every page, no classifier
//                            (fixed:raw, fixed:lz4, fixed:lz4:8 = acceleration 8,
//                            fixed:zstd:3 = level 3, fixed:wkdm, fixed:delta)
//   cbc[:<codec>[:<param>]]  class -> codec (MECOM): zero -> zero, uniform ->
//                            uniform, words -> wkdm, text -> lz4 (or the codec
//                            named), random -> raw, re-sent and cached -> delta
//                            when the delta is small
//   adaptive                 cbc's classes, codecs chosen from measured CPU cost,
//                            ratio, link rate and workers (adaptive.hpp)
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "compress/classifier.hpp"
#include "compress/codec.hpp"

namespace lm::compress {

struct CodecChoice {
  Codec codec = Codec::raw;
  CodecParams params;
  friend bool operator==(const CodecChoice& a, const CodecChoice& b) {
    return a.codec == b.codec && a.params.lz4_acceleration == b.params.lz4_acceleration &&
           a.params.zstd_level == b.params.zstd_level;
  }
};

// "lz4", "lz4:8", "zstd:3", "wkdm", "raw", "delta" -> a codec choice.
Result<CodecChoice> parse_codec_choice(std::string_view text);
std::string codec_choice_name(const CodecChoice& c);

enum class PolicyKind { fixed, cbc, adaptive };

struct PolicySpec {
  PolicyKind kind = PolicyKind::cbc;
  CodecChoice fixed;      // kind == fixed
  CodecChoice cbc_text;   // kind == cbc: codec for the text class
  std::string name;       // as given
};

Result<PolicySpec> parse_policy(std::string_view text);

// What a compressor does with the next batch: a codec per class (words, text
// and random; zero and uniform are always zero and uniform), whether the
// non-uniform pages must be sampled to tell those classes apart, and whether
// re-sent pages are looked up in the delta cache.
struct Plan {
  std::array<CodecChoice, kClassCount> by_class;
  bool sample = true;
  bool delta = false;
  // adaptive: a share of a class's pages sent with another codec
  std::array<CodecChoice, kClassCount> alt;
  std::array<float, kClassCount> alt_fraction{};
  // adaptive: the model's expected CPU per page, to reject outliers (0: none)
  std::array<float, kClassCount> expected_ns{};
  std::array<float, kClassCount> alt_expected_ns{};
  float expected_sample_ns = 0;
  float expected_fused_raw_ns = 0;
};

// cbc's fixed table.
Plan cbc_plan(const CodecChoice& text_codec, bool delta);

}  // namespace lm::compress

#include "compress/policy.hpp"

#include "common/parse.hpp"

namespace lm::compress {

Result<CodecChoice> parse_codec_choice(std::string_view text) {
  std::string_view name = text, param;
  if (auto colon = text.find(':'); colon != std::string_view::npos) {
    name = text.substr(0, colon);
    param = text.substr(colon + 1);
  }
  CodecChoice c;
  std::string t(text);
  if (name == "raw") c.codec = Codec::raw;
  else if (name == "lz4") c.codec = Codec::lz4;
  else if (name == "zstd") c.codec = Codec::zstd;
  else if (name == "wkdm") c.codec = Codec::wkdm;
  else if (name == "delta") c.codec = Codec::delta;
  else if (name == "zero" || name == "uniform")
    return Error::msg(strf("codec '%s' only encodes %s pages; it cannot be a fixed policy", t.c_str(),
                           std::string(name).c_str()));
  else return Error::msg(strf("unknown codec '%s' (raw, lz4[:accel], zstd[:level], wkdm, delta)", t.c_str()));
  if (!param.empty()) {
    auto v = parse_u64(param);
    if (!v) return std::move(v).error().context(strf("codec '%s'", t.c_str()));
    if (c.codec == Codec::lz4 && *v >= 1 && *v <= 65537) c.params.lz4_acceleration = int(*v);
    else if (c.codec == Codec::zstd && *v >= 1 && *v <= 22) c.params.zstd_level = int(*v);
    else return Error::msg(strf("codec '%s': parameter out of range (lz4 acceleration 1..65537, zstd level 1..22)",
                                t.c_str()));
  }
  return c;
}

std::string codec_choice_name(const CodecChoice& c) {
  std::string n(codec_name(c.codec));
  if (c.codec == Codec::lz4 && c.params.lz4_acceleration != 1) n += strf(":%d", c.params.lz4_acceleration);
  if (c.codec == Codec::zstd) n += strf(":%d", c.params.zstd_level);
  return n;
}

Result<PolicySpec> parse_policy(std::string_view text) {
  PolicySpec p;
  p.name = std::string(text);
  if (text.starts_with("fixed:")) {
    p.kind = PolicyKind::fixed;
    p.fixed = LM_TRY_CTX(parse_codec_choice(text.substr(6)), strf("policy '%s'", p.name.c_str()));
    return p;
  }
  if (text == "adaptive") {
    p.kind = PolicyKind::adaptive;
    return p;
  }
  if (text == "cbc" || text.starts_with("cbc:")) {
    p.kind = PolicyKind::cbc;
    p.cbc_text.codec = Codec::lz4;
    if (text.size() > 4) p.cbc_text = LM_TRY_CTX(parse_codec_choice(text.substr(4)), strf("policy '%s'", p.name.c_str()));
    return p;
  }
  return Error::msg(strf("unknown compression policy '%s' (fixed:<codec>, cbc, adaptive)", p.name.c_str()));
}

Plan cbc_plan(const CodecChoice& text_codec, bool delta) {
  Plan p;
  p.by_class[unsigned(PageClass::zero)].codec = Codec::zero;
  p.by_class[unsigned(PageClass::uniform)].codec = Codec::uniform;
  p.by_class[unsigned(PageClass::words)].codec = Codec::wkdm;
  p.by_class[unsigned(PageClass::text)] = text_codec;
  p.by_class[unsigned(PageClass::random)].codec = Codec::raw;
  p.by_class[unsigned(PageClass::resent)].codec = Codec::delta;
  p.sample = true;
  p.delta = delta;
  return p;
}

}  // namespace lm::compress

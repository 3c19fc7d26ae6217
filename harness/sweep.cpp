#include "harness/sweep.hpp"

#include <algorithm>
#include <cstdint>
#include <filesystem>

#include "harness/toml_value.hpp"

namespace lm::engine {

namespace {

Result<toml::table> parse_file(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Error::msg(strf("%s: %s", path.c_str(), std::string(e.description()).c_str()));
  }
}

}  // namespace

bool is_sweep_file(const std::string& path) {
  auto doc = parse_file(path);
  return doc && doc->contains("sweep");
}

Result<Sweep> load_sweep(const std::string& path) {
  auto doc = LM_TRY(parse_file(path));
  Sweep sweep;
  for (const auto& [k, node] : doc) {
    std::string key(k.str());
    if (key == "base" || key == "name" || key == "sweep" || key == "interleave") continue;
    return Error::msg(
        strf("%s: unknown key '%s' in a sweep file (base, name, interleave, [sweep])", path.c_str(), key.c_str()));
  }
  auto base = doc["base"].value<std::string>();
  if (!base) return Error::msg(strf("%s: a sweep needs base = \"<scenario>.toml\"", path.c_str()));
  sweep.base_path = (std::filesystem::path(path).parent_path() / *base).lexically_normal().string();
  sweep.name = doc["name"].value_or(std::filesystem::path(path).stem().string());
  const toml::table* axes = doc["sweep"].as_table();
  if (!axes || axes->empty()) return Error::msg(strf("%s: [sweep] must list keys with value arrays", path.c_str()));

  sweep.points.push_back({});
  for (const auto& [k, node] : *axes) {
    std::string key(k.str());
    sweep.keys.push_back(key);
    const toml::array* values = node.as_array();
    if (!values || values->empty())
      return Error::msg(strf("%s: sweep key '%s' needs a non-empty array of values", path.c_str(), key.c_str()));
    // Each point is one migration; a few keys with a few values each multiply fast.
    constexpr size_t kMaxPoints = 10000;
    if (sweep.points.size() * values->size() > kMaxPoints)
      return Error::msg(strf("%s: the sweep has more than %zu points (each one is a run)", path.c_str(), kMaxPoints));
    std::vector<SweepPoint> next;
    for (const auto& point : sweep.points) {
      for (size_t vi = 0; vi < values->size(); vi++) {
        std::string text = LM_TRY_CTX(toml_value_text((*values)[vi], key), path);
        SweepPoint p = point;
        p.value_index.push_back(vi);
        p.overrides.push_back(key + "=" + text);
        std::string shown = text;
        if (shown.size() >= 2 && shown.front() == '"') shown = shown.substr(1, shown.size() - 2);
        p.label += (p.label.empty() ? "" : ",") + key + "=" + shown;
        next.push_back(std::move(p));
      }
    }
    sweep.points = std::move(next);
  }
  if (auto key = doc["interleave"].value<std::string>()) {
    auto at = std::find(sweep.keys.begin(), sweep.keys.end(), *key);
    if (at == sweep.keys.end())
      return Error::msg(strf("%s: interleave = \"%s\" is not a key of [sweep]", path.c_str(), key->c_str()));
    sweep.interleave = size_t(at - sweep.keys.begin());
  } else if (doc.contains("interleave")) {
    return Error::msg(strf("%s: interleave must name a key of [sweep]", path.c_str()));
  }
  return sweep;
}

std::vector<size_t> sweep_run_order(const Sweep& sweep, unsigned pass) {
  std::vector<size_t> order(sweep.points.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  if (!sweep.interleave) return order;
  const size_t k = *sweep.interleave;
  const bool backwards = pass % 2 == 0;
  // Per point: the other keys' value indices in nesting order, then this key's.
  std::vector<std::vector<size_t>> run_key(order.size());
  for (size_t i = 0; i < order.size(); i++) {
    std::vector<size_t>& v = run_key[i] = sweep.points[i].value_index;
    const size_t mine = v[k];
    v.erase(v.begin() + ptrdiff_t(k));
    v.push_back(backwards ? SIZE_MAX - mine : mine);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return run_key[a] < run_key[b]; });
  return order;
}

}  // namespace lm::engine

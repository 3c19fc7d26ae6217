#include "harness/scenario.hpp"

#include <functional>
#include <sstream>

#include "common/args.hpp"
#include "compress/policy.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/prepaging.hpp"
#include "transport/channel.hpp"

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

namespace lm::engine {

namespace {

// One settable key: its dotted name and how to apply a TOML value to the config.
struct Key {
  const char* name;
  std::function<Result<void>(ScenarioConfig&, const toml::node&)> apply;
};

Error bad_type(std::string_view key, std::string_view want) {
  return Error::msg(strf("key '%.*s' must be %.*s", int(key.size()), key.data(), int(want.size()), want.data()));
}


// Builders for the common value kinds.
Key u64(const char* name, std::function<uint64_t&(ScenarioConfig&)> field, uint64_t min, uint64_t max) {
  return {name, [=](ScenarioConfig& c, const toml::node& n) -> Result<void> {
            auto v = n.value<int64_t>();
            if (!v) return bad_type(name, "an integer");
            if (*v < int64_t(min) || uint64_t(*v) > max)
              return Error::msg(strf("key '%s' = %lld is out of range [%llu, %llu]", name, (long long)*v,
                                     (unsigned long long)min, (unsigned long long)max));
            field(c) = uint64_t(*v);
            return ok();
          }};
}

Key u32(const char* name, std::function<unsigned&(ScenarioConfig&)> field, unsigned min, unsigned max) {
  return {name, [=](ScenarioConfig& c, const toml::node& n) -> Result<void> {
            auto v = n.value<int64_t>();
            if (!v) return bad_type(name, "an integer");
            if (*v < int64_t(min) || *v > int64_t(max))
              return Error::msg(strf("key '%s' = %lld is out of range [%u, %u]", name, (long long)*v, min, max));
            field(c) = unsigned(*v);
            return ok();
          }};
}

Key real(const char* name, std::function<double&(ScenarioConfig&)> field, double min, double max) {
  return {name, [=](ScenarioConfig& c, const toml::node& n) -> Result<void> {
            auto v = n.value<double>();
            if (!v) return bad_type(name, "a number");
            if (*v < min || *v > max) return Error::msg(strf("key '%s' = %g is out of range [%g, %g]", name, *v, min, max));
            field(c) = *v;
            return ok();
          }};
}

Key boolean(const char* name, std::function<bool&(ScenarioConfig&)> field) {
  return {name, [=](ScenarioConfig& c, const toml::node& n) -> Result<void> {
            auto v = n.value<bool>();
            if (!v) return bad_type(name, "true or false");
            field(c) = *v;
            return ok();
          }};
}

// A string, optionally restricted to a set of words (checked on the part
// before the first ':', so "hotspot:0.1" is a hotspot pattern).
Key text(const char* name, std::function<std::string&(ScenarioConfig&)> field,
         std::vector<std::string> allowed = {}) {
  return {name, [=](ScenarioConfig& c, const toml::node& n) -> Result<void> {
            std::string s;
            if (auto v = n.value<std::string>()) s = *v;
            else if (auto i = n.value<int64_t>()) s = std::to_string(*i);
            else return bad_type(name, "a string");
            if (!allowed.empty()) {
              std::string head = s.substr(0, s.find(':'));
              bool found = false;
              std::string list;
              for (const auto& a : allowed) {
                found |= a == head;
                list += (list.empty() ? "" : ", ") + a;
              }
              if (!found) return Error::msg(strf("key '%s' = '%s' is not one of: %s", name, s.c_str(), list.c_str()));
            }
            field(c) = s;
            return ok();
          }};
}

Key size(const char* name, std::function<uint64_t&(ScenarioConfig&)> field, uint64_t min) {
  return {name, [=](ScenarioConfig& c, const toml::node& n) -> Result<void> {
            uint64_t bytes = 0;
            if (auto i = n.value<int64_t>()) {
              bytes = uint64_t(*i);
            } else if (auto s = n.value<std::string>()) {
              auto parsed = parse_size(*s);
              if (!parsed) return Error::msg(strf("key '%s': %s", name, parsed.error().message.c_str()));
              bytes = *parsed;
            } else {
              return bad_type(name, "a size (e.g. \"1G\" or a number of bytes)");
            }
            if (bytes < min) return Error::msg(strf("key '%s' = %llu is below the minimum %llu", name,
                                                    (unsigned long long)bytes, (unsigned long long)min));
            field(c) = bytes;
            return ok();
          }};
}

const std::vector<Key>& keys() {
  using C = ScenarioConfig;
  static const std::vector<Key> table = {
      text("name", [](C& c) -> std::string& { return c.name; }),
      boolean("verify", [](C& c) -> bool& { return c.verify; }),
      u32("timeout-s", [](C& c) -> unsigned& { return c.timeout_s; }, 1, 86400),

      {"workload.kind",
       [](C& c, const toml::node& n) -> Result<void> {
         auto v = n.value<std::string>();
         if (v == "guest") c.workload.kind = WorkloadKind::guest;
         else if (v == "redis") c.workload.kind = WorkloadKind::redis;
         else return Error::msg("key 'workload.kind' must be \"guest\" or \"redis\"");
         return ok();
       }},
      size("workload.ram", [](C& c) -> uint64_t& { return c.workload.ram_bytes; }, 1 << 20),
      {"workload.rate",
       [](C& c, const toml::node& n) -> Result<void> {
         if (auto i = n.value<int64_t>(); i && *i >= 0) c.workload.rate = std::to_string(*i);
         else if (auto s = n.value<std::string>(); s && (*s == "max" || parse_u64(*s).ok())) c.workload.rate = *s;
         else return Error::msg("key 'workload.rate' must be pages per second (an integer >= 0) or \"max\"");
         return ok();
       }},
      text("workload.pattern", [](C& c) -> std::string& { return c.workload.pattern; },
           {"uniform", "hotspot", "zipf", "sequential", "stride"}),
      text("workload.content", [](C& c) -> std::string& { return c.workload.content; },
           {"zero", "text", "ints", "random", "mixed"}),
      text("workload.write", [](C& c) -> std::string& { return c.workload.write; }, {"page", "word"}),
      u32("workload.threads", [](C& c) -> unsigned& { return c.workload.threads; }, 1, 64),
      boolean("workload.prefill", [](C& c) -> bool& { return c.workload.prefill; }),
      u64("workload.seed", [](C& c) -> uint64_t& { return c.workload.seed; }, 0, UINT64_MAX >> 1),
      u64("workload.redis-keys", [](C& c) -> uint64_t& { return c.workload.redis_keys; }, 1, 100000000),
      size("workload.redis-value-size", [](C& c) -> uint64_t& { return c.workload.redis_value_bytes; }, 1),
      u32("workload.redis-clients", [](C& c) -> unsigned& { return c.workload.redis_clients; }, 1, 256),
      u32("workload.warmup-ms", [](C& c) -> unsigned& { return c.workload.warmup_ms; }, 0, 600000),

      {"migration.mode",
       [](C& c, const toml::node& n) -> Result<void> {
         auto v = n.value<std::string>();
         if (v == "precopy") c.migration.mode = MigrationMode::precopy;
         else if (v == "postcopy") c.migration.mode = MigrationMode::postcopy;
         else if (v == "hybrid") c.migration.mode = MigrationMode::hybrid;
         else return Error::msg("key 'migration.mode' must be \"precopy\", \"postcopy\" or \"hybrid\"");
         return ok();
       }},
      text("migration.transport", [](C& c) -> std::string& { return c.migration.transport; }),
      text("migration.address", [](C& c) -> std::string& { return c.migration.address; }),
      u32("migration.channels", [](C& c) -> unsigned& { return c.migration.channels; }, 1, 16),
      text("migration.policy", [](C& c) -> std::string& { return c.migration.policy; }),
      u32("migration.workers", [](C& c) -> unsigned& { return c.migration.workers; }, 1, 64),
      text("migration.tracker", [](C& c) -> std::string& { return c.migration.tracker; }),
      u32("migration.batch-pages", [](C& c) -> unsigned& { return c.migration.batch_pages; }, 1, 4096),

      u32("convergence.max-rounds", [](C& c) -> unsigned& { return c.convergence.max_rounds; }, 1, 10000),
      real("convergence.max-bytes-factor", [](C& c) -> double& { return c.convergence.max_bytes_factor; }, 0, 1e6),
      u64("convergence.dirty-pages-threshold",
          [](C& c) -> uint64_t& { return c.convergence.dirty_pages_threshold; }, 0, UINT64_MAX >> 1),
      real("convergence.downtime-target-ms", [](C& c) -> double& { return c.convergence.downtime_target_ms; }, 0,
           1e9),
      boolean("convergence.auto-converge", [](C& c) -> bool& { return c.auto_converge.enabled; }),
      u32("convergence.throttle-initial", [](C& c) -> unsigned& { return c.auto_converge.initial_percent; }, 1, 99),
      u32("convergence.throttle-increment", [](C& c) -> unsigned& { return c.auto_converge.increment_percent; }, 1,
          99),
      u32("convergence.throttle-max", [](C& c) -> unsigned& { return c.auto_converge.max_percent; }, 1, 99),

      text("postcopy.prepaging", [](C& c) -> std::string& { return c.postcopy.prepaging; },
           {"none", "sequential", "bubble", "bubble-forward"}),
      u32("postcopy.pivots", [](C& c) -> unsigned& { return c.postcopy.pivots; }, 1, 64),
      u32("postcopy.precopy-rounds", [](C& c) -> unsigned& { return c.postcopy.precopy_rounds; }, 0, 10000),
      u32("postcopy.reconnect-timeout-ms", [](C& c) -> unsigned& { return c.postcopy.reconnect_timeout_ms; }, 0,
          3600000),
  };
  return table;
}

const Key* find_key(std::string_view name) {
  for (const auto& k : keys())
    if (name == k.name) return &k;
  return nullptr;
}

// Walks a parsed document; every leaf must be a known key.
Result<void> apply_table(ScenarioConfig& c, const toml::table& table, const std::string& prefix,
                         const std::string& origin) {
  for (const auto& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* sub = node.as_table()) {
      LM_TRY(apply_table(c, *sub, name, origin));
      continue;
    }
    const Key* key = find_key(name);
    if (!key) return Error::msg(strf("%s: unknown key '%s'", origin.c_str(), name.c_str()));
    LM_TRY_CTX(key->apply(c, node), origin);
  }
  return ok();
}

Result<void> apply_override(ScenarioConfig& c, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return Error::msg(strf("--set '%s': expected section.key=value", assignment.c_str()));
  std::string name = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  const Key* key = find_key(name);
  if (!key) return Error::msg(strf("--set: unknown key '%s'", name.c_str()));
  // Read the value as TOML if it is one (numbers, booleans, quoted strings);
  // otherwise as a bare string.
  toml::table holder;
  try {
    holder = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    holder.insert("v", value);
  }
  return key->apply(c, *holder.get("v")).context("--set");
}

Result<void> validate(const ScenarioConfig& c) {
  if (c.workload.kind == WorkloadKind::guest && c.workload.ram_bytes % 4096)
    return Error::msg("key 'workload.ram' must be a multiple of 4096");
  if (c.auto_converge.initial_percent > c.auto_converge.max_percent)
    return Error::msg("key 'convergence.throttle-initial' exceeds 'convergence.throttle-max'");
  if (c.migration.policy.rfind("fixed", 0) == 0 && c.migration.policy.find(':') == std::string::npos)
    return Error::msg("key 'migration.policy' = 'fixed' needs a codec, e.g. \"fixed:lz4\"");
  // Names are checked against what this build has, before anything runs.
  LM_TRY_CTX(transport::find_backend(c.migration.transport), "key 'migration.transport'");
  LM_TRY_CTX(compress::parse_policy(c.migration.policy), "key 'migration.policy'");
  LM_TRY_CTX(parse_prepaging(c.postcopy.prepaging), "key 'postcopy.prepaging'");
  if (c.migration.tracker != "auto") {
    std::string known = "auto";
    bool found = false;
    for (const auto& b : dt::tracker_backends()) {
      found |= b.name == c.migration.tracker;
      known += ", " + std::string(b.name);
    }
    if (!found)
      return Error::msg(strf("key 'migration.tracker': unknown tracker '%s' (known: %s)",
                             c.migration.tracker.c_str(), known.c_str()));
  }
  return ok();
}

}  // namespace

Result<ScenarioConfig> parse_scenario(const std::string& toml_text, const std::string& origin,
                                      const std::vector<std::string>& overrides) {
  ScenarioConfig c;
  c.source_path = origin;
  toml::table doc;
  try {
    doc = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return Error::msg(strf("%s: %s (at %s)", origin.c_str(), std::string(e.description()).c_str(),
                           where.str().c_str()));
  }
  LM_TRY(apply_table(c, doc, "", origin));
  for (const auto& o : overrides) LM_TRY(apply_override(c, o));
  LM_TRY_CTX(validate(c), origin);
  return c;
}

Result<ScenarioConfig> load_scenario(const std::string& path, const std::vector<std::string>& overrides) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return Error::from_errno(strf("open scenario %s", path.c_str()));
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return parse_scenario(text, path, overrides);
}

}  // namespace lm::engine

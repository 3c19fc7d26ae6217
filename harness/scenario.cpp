#include "harness/scenario.hpp"

#include <functional>
#include <optional>
#include <sstream>

#include "common/parse.hpp"
#include "compress/policy.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/prepaging.hpp"
#include "harness/rig.hpp"
#include "transport/channel.hpp"
#include "transport/protocol.hpp"

#include "harness/toml_value.hpp"

namespace lm::engine {

namespace {

using C = ScenarioConfig;

// One setting: its dotted name, how a TOML value is read into the config,
// and how the config's value is shown (the defaults in the flags' help).
struct Key {
  const char* name;
  std::function<Result<void>(C&, const toml::node&)> apply;
  std::function<std::string(C)> show;  // on a copy
};

Error bad_type(std::string_view key, std::string_view want) {
  return Error::msg(strf("key '%.*s' must be %.*s", int(key.size()), key.data(), int(want.size()), want.data()));
}

// An integer value, or a float that is exactly one. toml++'s value<int64_t>()
// casts a float beyond int64's range, which is undefined: those are refused here.
std::optional<int64_t> int64_of(const toml::node& n) {
  if (auto d = n.as_floating_point(); d && !(d->get() >= -0x1p63 && d->get() < 0x1p63)) return std::nullopt;
  return n.value<int64_t>();
}

// An integer in [min, max].
Result<int64_t> integer(const char* name, const toml::node& n, int64_t min, int64_t max) {
  auto v = int64_of(n);
  if (!v) return bad_type(name, "an integer");
  if (*v < min || *v > max)
    return Error::msg(strf("key '%s' = %lld is out of range [%lld, %lld]", name, (long long)*v, (long long)min,
                           (long long)max));
  return *v;
}

// Builders for the common value kinds.
template <class T>
Key whole(const char* name, T& (*field)(C&), int64_t min, int64_t max) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            field(c) = T(LM_TRY(integer(name, n, min, max)));
            return ok();
          },
          [=](C c) { return std::to_string(field(c)); }};
}

// A duration in whole units of D (the key's name says which: -ms, -s).
template <class D>
Key duration(const char* name, D& (*field)(C&), int64_t min, int64_t max) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            field(c) = D(LM_TRY(integer(name, n, min, max)));
            return ok();
          },
          [=](C c) { return std::to_string(field(c).count()); }};
}

Key real(const char* name, double& (*field)(C&), double min, double max) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            auto v = n.value<double>();
            if (!v) return bad_type(name, "a number");
            if (*v < min || *v > max)
              return Error::msg(strf("key '%s' = %g is out of range [%g, %g]", name, *v, min, max));
            field(c) = *v;
            return ok();
          },
          [=](C c) { return strf("%g", field(c)); }};
}

Key boolean(const char* name, bool& (*field)(C&)) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            auto v = n.value<bool>();
            if (!v) return bad_type(name, "true or false");
            field(c) = *v;
            return ok();
          },
          [=](C c) { return std::string(field(c) ? "true" : "false"); }};
}

// The text of a string (or integer) value.
Result<std::string> text_of(const char* name, const toml::node& n) {
  if (auto v = n.value<std::string>()) return *v;
  if (auto i = int64_of(n)) return std::to_string(*i);
  return bad_type(name, "a string");
}

// A value read from its text by `parse` (names checked against a registry,
// policies, enums): the error names the key and the value.
template <class T>
Key parsed(const char* name, T& (*field)(C&), Result<T> (*parse)(std::string_view),
           std::string (*show)(const T&)) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            std::string s = LM_TRY(text_of(name, n));
            auto v = parse(s);
            if (!v) return Error::msg(strf("key '%s' = '%s': %s", name, s.c_str(), v.error().message.c_str()));
            field(c) = std::move(*v);
            return ok();
          },
          [=](C c) { return show(field(c)); }};
}

// A string, optionally restricted to a set of words (checked on the part
// before the first ':', so "hotspot:0.1" is a hotspot pattern).
Key text(const char* name, std::string& (*field)(C&), std::vector<std::string> allowed = {}) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            std::string s = LM_TRY(text_of(name, n));
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
          },
          [=](C c) { return field(c); }};
}

std::string size_text(uint64_t bytes) {
  for (auto [shift, unit] : {std::pair{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}})
    if (bytes && bytes % (1ull << shift) == 0) return strf("%llu%s", (unsigned long long)(bytes >> shift), unit);
  return std::to_string(bytes);
}

Key size(const char* name, uint64_t& (*field)(C&), uint64_t min) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            uint64_t bytes = 0;
            if (auto i = int64_of(n)) {
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
          },
          [=](C c) { return size_text(field(c)); }};
}

// --- the parsers of the typed values ---------------------------------------------------

std::string as_is(const std::string& s) { return s; }

// A transport this build has (the registry), by name.
Result<std::string> parse_transport(std::string_view name) {
  LM_TRY(transport::find_backend(name));
  return std::string(name);
}

// "auto" or a tracker backend this build has.
Result<std::string> parse_tracker(std::string_view name) {
  std::string known = "auto";
  for (const auto& b : dt::tracker_backends()) {
    if (b.name == name) return std::string(name);
    known += ", " + std::string(b.name);
  }
  if (name == "auto") return std::string(name);
  return Error::msg(strf("unknown tracker (known: %s)", known.c_str()));
}

Result<compress::PolicySpec> parse_policy(std::string_view text) {
  if (text == "fixed") return Error::msg("'fixed' needs a codec, e.g. \"fixed:lz4\"");
  return compress::parse_policy(text);
}
std::string policy_text(const compress::PolicySpec& p) { return p.name; }

std::string prepaging_text(const PrepagingKind& k) { return std::string(prepaging_name(k)); }

Result<MigrationMode> parse_mode(std::string_view text) {
  for (auto m : {MigrationMode::precopy, MigrationMode::postcopy, MigrationMode::hybrid})
    if (text == mode_name(m)) return m;
  return Error::msg("expected precopy, postcopy or hybrid");
}
std::string mode_text(const MigrationMode& m) { return std::string(mode_name(m)); }

Result<WorkloadKind> parse_workload_kind(std::string_view text) {
  for (auto k : {WorkloadKind::guest, WorkloadKind::redis})
    if (text == workload_name(k)) return k;
  return Error::msg("expected guest or redis");
}
std::string workload_text(const WorkloadKind& k) { return std::string(workload_name(k)); }

Result<std::string> parse_rate(std::string_view text) {
  if (text == "max" || parse_u64(text).ok()) return std::string(text);
  return Error::msg("expected pages per second (an integer >= 0) or \"max\"");
}

std::string strategy_text(const GroupStrategy& s) { return std::string(strategy_name(s)); }

// link.rate: "unlimited" or tc's units ("1gbit", "2.5gbit", "500mbit").
Result<uint64_t> parse_link_rate(std::string_view text) {
  if (text == "unlimited") return uint64_t(0);
  return rig::parse_rate(text);
}
std::string link_rate_text(const uint64_t& bps) {
  if (bps == 0) return "unlimited";
  for (auto [scale, unit] : {std::pair{1e9, "gbit"}, {1e6, "mbit"}, {1e3, "kbit"}})
    if (double(bps) >= scale) return strf("%g%s", double(bps) / scale, unit);
  return strf("%llubit", (unsigned long long)bps);
}

// A group key: setting it makes the scenario a group's.
Key group_key(Key k) {
  auto apply = k.apply;
  k.apply = [apply](C& c, const toml::node& n) -> Result<void> {
    LM_TRY(apply(c, n));
    c.group.enabled = true;
    return ok();
  };
  return k;
}

Key weights(const char* name) {
  return {name,
          [=](C& c, const toml::node& n) -> Result<void> {
            const toml::array* a = n.as_array();
            if (!a) return bad_type(name, "an array of numbers, one weight per VM");
            std::vector<double> w;
            for (const auto& v : *a) {
              auto d = v.value<double>();
              if (!d || !(*d > 0) || *d > 1e6) return Error::msg(strf("key '%s': each weight must be a number in (0, 1e6]", name));
              w.push_back(*d);
            }
            c.group.weights = std::move(w);
            c.group.enabled = true;
            return ok();
          },
          [](C c) {
            std::string s;
            for (double w : c.group.weights) s += (s.empty() ? "" : ", ") + strf("%g", w);
            return "[" + s + "]";
          }};
}

const std::vector<Key>& keys() {
  static const std::vector<Key> table = {
      text("name", [](C& c) -> std::string& { return c.name; }),
      boolean("verify", [](C& c) -> bool& { return c.verify; }),
      duration<std::chrono::seconds>("timeout-s", [](C& c) -> std::chrono::seconds& { return c.timeout; }, 1,
                                     86400),

      parsed<WorkloadKind>("workload.kind", [](C& c) -> WorkloadKind& { return c.workload.kind; },
                           parse_workload_kind, workload_text),
      size("workload.ram", [](C& c) -> uint64_t& { return c.workload.ram_bytes; }, 1 << 20),
      parsed<std::string>("workload.rate", [](C& c) -> std::string& { return c.workload.rate; }, parse_rate, as_is),
      text("workload.pattern", [](C& c) -> std::string& { return c.workload.pattern; },
           {"uniform", "hotspot", "zipf", "sequential", "stride"}),
      text("workload.content", [](C& c) -> std::string& { return c.workload.content; },
           {"zero", "text", "ints", "random", "mixed"}),
      text("workload.write", [](C& c) -> std::string& { return c.workload.write; }, {"page", "word"}),
      whole<unsigned>("workload.threads", [](C& c) -> unsigned& { return c.workload.threads; }, 1, 64),
      boolean("workload.prefill", [](C& c) -> bool& { return c.workload.prefill; }),
      text("workload.ram-pages", [](C& c) -> std::string& { return c.workload.ram_pages; }, {"huge", "small"}),
      text("workload.cpus", [](C& c) -> std::string& { return c.workload.cpus; }),
      whole<uint64_t>("workload.seed", [](C& c) -> uint64_t& { return c.workload.seed; }, 0, INT64_MAX),
      whole<uint64_t>("workload.redis-keys", [](C& c) -> uint64_t& { return c.workload.redis_keys; }, 1, 100000000),
      size("workload.redis-value-size", [](C& c) -> uint64_t& { return c.workload.redis_value_bytes; }, 1),
      whole<unsigned>("workload.redis-clients", [](C& c) -> unsigned& { return c.workload.redis_clients; }, 1, 256),
      duration<std::chrono::milliseconds>("workload.warmup-ms",
                                          [](C& c) -> std::chrono::milliseconds& { return c.workload.warmup; }, 0,
                                          600000),

      parsed<MigrationMode>("migration.mode", [](C& c) -> MigrationMode& { return c.migration.mode; }, parse_mode,
                            mode_text),
      parsed<std::string>("migration.transport", [](C& c) -> std::string& { return c.migration.transport; },
                          parse_transport, as_is),
      text("migration.address", [](C& c) -> std::string& { return c.migration.address; }),
      whole<unsigned>("migration.channels", [](C& c) -> unsigned& { return c.migration.channels; }, 1, 16),
      parsed<compress::PolicySpec>("migration.policy",
                                   [](C& c) -> compress::PolicySpec& { return c.migration.policy; }, parse_policy,
                                   policy_text),
      whole<unsigned>("migration.workers", [](C& c) -> unsigned& { return c.migration.workers; }, 1, 64),
      parsed<std::string>("migration.tracker", [](C& c) -> std::string& { return c.migration.tracker; },
                          parse_tracker, as_is),
      boolean("migration.hold-hot-pages", [](C& c) -> bool& { return c.migration.hold_hot_pages; }),
      whole<unsigned>("migration.batch-pages", [](C& c) -> unsigned& { return c.migration.batch_pages; }, 1, 4096),
      size("migration.protect-chunk", [](C& c) -> uint64_t& { return c.migration.protect_chunk_bytes; }, 0),

      whole<unsigned>("convergence.max-rounds", [](C& c) -> unsigned& { return c.convergence.max_rounds; }, 1, 10000),
      real("convergence.max-bytes-factor", [](C& c) -> double& { return c.convergence.max_bytes_factor; }, 0, 1e6),
      whole<uint64_t>("convergence.dirty-pages-threshold",
                      [](C& c) -> uint64_t& { return c.convergence.dirty_pages_threshold; }, 0, INT64_MAX),
      real("convergence.downtime-target-ms", [](C& c) -> double& { return c.convergence.downtime_target_ms; }, 0,
           1e9),
      real("convergence.downtime-floor-ms", [](C& c) -> double& { return c.convergence.downtime_floor_ms; }, 0, 1e9),
      boolean("convergence.auto-converge", [](C& c) -> bool& { return c.auto_converge.enabled; }),
      whole<unsigned>("convergence.throttle-initial",
                      [](C& c) -> unsigned& { return c.auto_converge.initial_percent; }, 1, 99),
      whole<unsigned>("convergence.throttle-increment",
                      [](C& c) -> unsigned& { return c.auto_converge.increment_percent; }, 1, 99),
      whole<unsigned>("convergence.throttle-max", [](C& c) -> unsigned& { return c.auto_converge.max_percent; }, 1,
                      99),

      parsed<PrepagingKind>("postcopy.prepaging", [](C& c) -> PrepagingKind& { return c.postcopy.prepaging; },
                            parse_prepaging, prepaging_text),
      whole<unsigned>("postcopy.pivots", [](C& c) -> unsigned& { return c.postcopy.pivots; }, 1, 64),
      whole<unsigned>("postcopy.precopy-rounds", [](C& c) -> unsigned& { return c.postcopy.precopy_rounds; }, 0,
                      10000),
      duration<std::chrono::milliseconds>(
          "postcopy.reconnect-timeout-ms",
          [](C& c) -> std::chrono::milliseconds& { return c.postcopy.reconnect_timeout; }, 0, 3600000),

      text("security.psk-file", [](C& c) -> std::string& { return c.security.psk_file; }),
      boolean("security.insecure", [](C& c) -> bool& { return c.security.insecure; }),
      // The destination's admission limits (engine/admission.hpp); max-ram 0: 75% of MemAvailable.
      size("limits.max-ram", [](C& c) -> uint64_t& { return c.limits.max_ram_bytes; }, 0),
      whole<unsigned>("limits.max-mappings", [](C& c) -> unsigned& { return c.limits.max_mappings; }, 1,
                      transport::kMaxMappings),
      whole<unsigned>("limits.max-channels", [](C& c) -> unsigned& { return c.limits.max_bulk_channels; }, 1,
                      UINT16_MAX),
      boolean("security.tls", [](C& c) -> bool& { return c.security.tls; }),
      text("security.tls-creds", [](C& c) -> std::string& { return c.security.tls_creds; }),

      // A group of VMs (engine/group.hpp); 0 is refused by validate_scenario.
      group_key(whole<unsigned>("group.vms", [](C& c) -> unsigned& { return c.group.vms; }, 0, 64)),
      group_key(parsed<GroupStrategy>("group.strategy", [](C& c) -> GroupStrategy& { return c.group.strategy; },
                                      parse_strategy, strategy_text)),
      group_key(size("group.link-rate", [](C& c) -> uint64_t& { return c.group.link_rate; }, 0)),
      weights("group.weights"),

      // The link between the sides: a rig of two network namespaces for the
      // run (harness/rig.hpp); a rate implies the namespaces.
      parsed<uint64_t>("link.rate", [](C& c) -> uint64_t& { return c.link.rate_bps; }, parse_link_rate,
                       link_rate_text),
      boolean("link.namespaces", [](C& c) -> bool& { return c.link.namespaces; }),
  };
  return table;
}

const Key* find_key(std::string_view name) {
  for (const auto& k : keys())
    if (name == k.name) return &k;
  return nullptr;
}

// The keys of one [[vm]] table, flattened ("workload.ram"), as TOML text.
Result<void> collect_vm_settings(const toml::table& table, const std::string& prefix, GroupVmConfig& vm) {
  for (const auto& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* sub = node.as_table()) {
      LM_TRY(collect_vm_settings(*sub, name, vm));
      continue;
    }
    if (name == "weight") {
      auto w = node.value<double>();
      if (!w || !(*w > 0) || *w > 1e6) return Error::msg("key 'weight' of a [[vm]] must be a number in (0, 1e6]");
      vm.weight = *w;
      continue;
    }
    if (name.starts_with("group.")) return Error::msg(strf("key '%s' belongs to the group, not to a [[vm]]", name.c_str()));
    if (!find_key(name)) return Error::msg(strf("unknown key '%s' in a [[vm]]", name.c_str()));
    vm.settings.emplace_back(name, LM_TRY(toml_value_text(node, name)));
  }
  return ok();
}

// [[vm]] tables: one VM of the group each.
Result<void> apply_vm_tables(C& c, const toml::node& node, const std::string& origin) {
  const toml::array* tables = node.as_array();
  if (!tables || !tables->is_array_of_tables())
    return Error::msg(strf("%s: 'vm' must be [[vm]] tables, one per VM", origin.c_str()));
  for (const auto& t : *tables) {
    GroupVmConfig vm;
    LM_TRY_CTX(collect_vm_settings(*t.as_table(), "", vm), strf("%s: [[vm]] %zu", origin.c_str(), c.group.vm.size() + 1));
    c.group.vm.push_back(std::move(vm));
  }
  c.group.vms = unsigned(c.group.vm.size());
  c.group.enabled = true;
  return ok();
}

// Walks a parsed document; every leaf must be a known key.
Result<void> apply_table(C& c, const toml::table& table, const std::string& prefix, const std::string& origin) {
  for (const auto& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (name == "vm") continue;  // parse_scenario reads [[vm]] first
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

Result<void> apply_override(C& c, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return Error::msg(strf("--set '%s': expected section.key=value", assignment.c_str()));
  return apply_setting(c, std::string_view(assignment).substr(0, eq), std::string_view(assignment).substr(eq + 1))
      .context("--set");
}

}  // namespace

Result<void> apply_setting(ScenarioConfig& c, std::string_view name, std::string_view value) {
  const Key* key = find_key(name);
  if (!key) return Error::msg(strf("unknown key '%.*s'", int(name.size()), name.data()));
  // Read the value as TOML if it is one (numbers, booleans, quoted strings);
  // otherwise as a bare string.
  toml::table holder;
  try {
    holder = toml::parse("v = " + std::string(value));
  } catch (const toml::parse_error&) {
    holder.insert("v", std::string(value));
  }
  return key->apply(c, *holder.get("v"));
}

std::string setting_text(const ScenarioConfig& c, std::string_view name) {
  const Key* key = find_key(name);
  return key ? key->show(c) : std::string();
}

Result<void> validate_scenario(const ScenarioConfig& c) {
  if (c.workload.kind == WorkloadKind::guest && c.workload.ram_bytes % 4096)
    return Error::msg("key 'workload.ram' must be a multiple of 4096");
  if (c.auto_converge.initial_percent > c.auto_converge.max_percent)
    return Error::msg("key 'convergence.throttle-initial' exceeds 'convergence.throttle-max'");
  if (!c.security.tls_creds.empty() && !c.security.tls) return Error::msg("key 'security.tls-creds' needs 'security.tls = true'");
  if (c.link.uses_rig()) {
    if (c.migration.transport == "dpdk")
      return Error::msg("key 'link.rate'/'link.namespaces': the dpdk transport cannot run over the rig: its af_packet "
                        "socket bypasses the qdiscs (qdisc_bypass=1), so a rate would not apply, and its PMD reads "
                        "the namespace's /sys, which the runner's threads do not see (docs/benchmarks-rig.md)");
    if (c.group.enabled) return Error::msg("key 'link.rate'/'link.namespaces': groups do not run over the rig yet");
  }
  if (c.group.enabled) {
    if (c.group.vms == 0) return Error::msg("key 'group.vms' = 0: a group migrates at least one VM");
    if (!c.group.vm.empty() && c.group.vm.size() != c.group.vms)
      return Error::msg(strf("key 'group.vms' = %u, but the scenario has %zu [[vm]] tables", c.group.vms,
                             c.group.vm.size()));
    if (c.group.weights.size() > c.group.vms)
      return Error::msg(strf("key 'group.weights' has %zu weights for %u VMs", c.group.weights.size(), c.group.vms));
    if (c.workload.kind != WorkloadKind::guest) return Error::msg("a group migrates guests (workload.kind = \"guest\")");
    for (size_t i = 0; i < c.group.vm.size(); i++) LM_TRY(vm_scenario(c, i));
  }
  return ok();
}

Result<std::string> toml_value_text(const toml::node& n, const std::string& key) {
  if (auto s = n.value<std::string>()) return "\"" + *s + "\"";
  // Not value<int64_t>(): on a float beyond int64's range its cast is undefined.
  if (auto i = n.as_integer()) return std::to_string(i->get());
  if (auto d = n.value<double>()) return strf("%.17g", *d);
  if (auto b = n.value<bool>()) return std::string(*b ? "true" : "false");
  return Error::msg(strf("key '%s': values must be strings, numbers or booleans", key.c_str()));
}

Result<ScenarioConfig> vm_scenario(const ScenarioConfig& group, size_t i) {
  ScenarioConfig c = group;
  c.group = {};
  c.name = strf("%s-vm%zu", group.name.c_str(), i + 1);
  c.workload.seed = group.workload.seed + i;  // each guest its own content
  if (i < group.group.vm.size())
    for (const auto& [key, value] : group.group.vm[i].settings)
      LM_TRY_CTX(apply_setting(c, key, value), strf("[[vm]] %zu", i + 1));
  LM_TRY_CTX(validate_scenario(c), strf("[[vm]] %zu", i + 1));
  return c;
}

double vm_weight(const GroupConfig& g, size_t i) {
  if (i < g.vm.size() && g.vm[i].weight > 0) return g.vm[i].weight;
  return i < g.weights.size() ? g.weights[i] : 1.0;
}

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
  // [[vm]] first: its count is group.vms, which a group.vms key then must match.
  if (const toml::node* vms = doc.get("vm")) LM_TRY(apply_vm_tables(c, *vms, origin));
  LM_TRY(apply_table(c, doc, "", origin));
  for (const auto& o : overrides) LM_TRY(apply_override(c, o));
  LM_TRY_CTX(validate_scenario(c), origin);
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

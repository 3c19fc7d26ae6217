// A minimal streaming JSON writer for results and --json output.
// Keys are written in call order; the caller keeps objects balanced.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lm {

class JsonWriter {
 public:
  explicit JsonWriter(bool pretty = true) : pretty_(pretty) {}

  JsonWriter& begin_object(std::string_view key = {});
  JsonWriter& end_object();
  JsonWriter& begin_array(std::string_view key = {});
  JsonWriter& end_array();

  JsonWriter& field(std::string_view key, std::string_view v);
  JsonWriter& field(std::string_view key, const char* v) { return field(key, std::string_view(v)); }
  JsonWriter& field(std::string_view key, bool v);
  JsonWriter& field(std::string_view key, int64_t v);
  JsonWriter& field(std::string_view key, uint64_t v);
  JsonWriter& field(std::string_view key, int v) { return field(key, int64_t(v)); }
  JsonWriter& field(std::string_view key, unsigned v) { return field(key, uint64_t(v)); }
  JsonWriter& field(std::string_view key, double v);
  JsonWriter& null_field(std::string_view key);

  // Array elements.
  JsonWriter& value(std::string_view v);
  JsonWriter& value(uint64_t v);
  JsonWriter& value(double v);

  const std::string& str() const { return out_; }

 private:
  void separator(std::string_view key);
  void newline();
  bool pretty_;
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
};

std::string json_escape(std::string_view s);

}  // namespace lm

#include "common/json.hpp"

#include <cmath>
#include <cstdio>

namespace lm {

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

void JsonWriter::newline() {
  if (!pretty_) return;
  out_ += '\n';
  out_.append(first_.size() * 2, ' ');
}

void JsonWriter::separator(std::string_view key) {
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
    newline();
  }
  if (!key.empty()) {
    out_ += '"';
    out_ += json_escape(key);
    out_ += pretty_ ? "\": " : "\":";
  }
}

JsonWriter& JsonWriter::begin_object(std::string_view key) {
  separator(key);
  out_ += '{';
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  bool empty = first_.back();
  first_.pop_back();
  if (!empty) newline();
  out_ += '}';
  if (first_.empty() && pretty_) out_ += '\n';
  return *this;
}

JsonWriter& JsonWriter::begin_array(std::string_view key) {
  separator(key);
  out_ += '[';
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  bool empty = first_.back();
  first_.pop_back();
  if (!empty) newline();
  out_ += ']';
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view key, std::string_view v) {
  separator(key);
  out_ += '"';
  out_ += json_escape(v);
  out_ += '"';
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view key, bool v) {
  separator(key);
  out_ += v ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view key, int64_t v) {
  separator(key);
  out_ += std::to_string(v);
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view key, uint64_t v) {
  separator(key);
  out_ += std::to_string(v);
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view key, double v) {
  separator(key);
  if (!std::isfinite(v)) {
    out_ += "null";
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    out_ += buf;
  }
  return *this;
}

JsonWriter& JsonWriter::null_field(std::string_view key) {
  separator(key);
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::value(std::string_view v) { return field({}, v); }
JsonWriter& JsonWriter::value(uint64_t v) { return field({}, v); }
JsonWriter& JsonWriter::value(double v) { return field({}, v); }

}  // namespace lm

// Values from text: sizes with binary units, unsigned integers, numbers.
// Shared by the command line (harness/cli.hpp), scenarios and backend options.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/error.hpp"

namespace lm {

// Parses "4096", "64K", "256M", "1G", "2GiB" (binary multiples) into bytes.
Result<uint64_t> parse_size(std::string_view text);
// Parses a decimal or 0x-prefixed unsigned integer.
Result<uint64_t> parse_u64(std::string_view text);
Result<double> parse_double(std::string_view text);

}  // namespace lm

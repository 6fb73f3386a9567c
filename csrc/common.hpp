// Shared error types and small helpers for the dcrt native core.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace dcrt {

// A file that breaks docs/format.md. The message names section and field.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A caller's input is wrong (shape, value): becomes ValueError in Python.
struct InputError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A valid file whose declared network is bigger than the caller allowed (LoadLimits): becomes
// dcrt.LimitError (a ValueError) in Python.
struct LimitError : std::length_error {
  using std::length_error::length_error;
};

inline uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace dcrt

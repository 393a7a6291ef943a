#pragma once
// Small integer helpers used by formats and geometry checks.

#include <cstdint>

namespace tandem {

// Whether `v` is a power of two (0 is not).
constexpr bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// `v` rounded up to a multiple of `align`. REQUIRES: IsPowerOfTwo(align), no
// overflow.
constexpr uint64_t AlignUp(uint64_t v, uint64_t align) { return (v + align - 1) & ~(align - 1); }

}  // namespace tandem

#pragma once
// CRC-32C (Castagnoli), as used by iSCSI, ext4 and our wire and metadata
// formats. Backed by ISA-L's crc32_iscsi, which uses SSE4.2/PCLMUL when present.
//
// Crc32c("123456789") == 0xE3069283 (the standard check value).

#include <cstddef>
#include <cstdint>

namespace tandem {

// Extends `crc` (the value returned for the preceding bytes, 0 to start) over
// data[0, n).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

}  // namespace tandem

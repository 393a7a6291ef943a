#include "common/crc32c.h"

#include <isa-l/crc.h>

namespace tandem {

// ISA-L's crc32_iscsi takes and returns the raw register without the final
// inversion, so the standard CRC-32C is ~crc32_iscsi(data, n, ~crc).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  return ~crc32_iscsi(static_cast<unsigned char*>(const_cast<void*>(data)), static_cast<int>(n),
                      ~crc);
}

}  // namespace tandem

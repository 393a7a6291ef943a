#pragma once
// The block stamp of the acknowledged-write verifier (tests/tools/ack_verifier).
//
// Every block the verifier writes carries, in its first 64 bytes:
//
//   0  magic      u64  kStampMagic
//   8  offset     u64  byte offset the block was written to
//   16 seq        u64  sequence number of the write (strictly increasing)
//   24 writer_id  u64  identifies the writer process
//   32 block_size u32  size of the stamped block
//   36 crc32c     u32  CRC-32C of the whole block with this field zeroed
//   40 reserved   24 bytes of zero
//
// followed by a filler derived from (offset, seq), so the CRC covers data that
// differs between writes. All fields are little-endian (common/coding.h).
// Reading a block back tells whether it holds the write we expect (seq), a
// write meant for another offset (misdirected), or garbage (bad CRC).

#include <cstddef>
#include <cstdint>

namespace tandem::testtools {

constexpr uint64_t kStampMagic = 0x564b434d444e4154ull;  // "TANDMCKV"
constexpr size_t kStampHeaderSize = 64;
constexpr size_t kMinStampBlockSize = 512;

struct Stamp {
  uint64_t offset = 0;
  uint64_t seq = 0;
  uint64_t writer_id = 0;
};

enum class StampCheck {
  kOk,         // magic, size and CRC match; *stamp is filled in
  kUnwritten,  // the block is all zeroes (never written, or trimmed)
  kNoStamp,    // not all zero, but no stamp magic: foreign data
  kBadSize,    // a stamp of another block size
  kBadCrc,     // stamp magic present but the CRC does not match: torn or corrupt
};

const char* StampCheckName(StampCheck check);

// Fills block[0, block_size) with the stamp and its filler.
// REQUIRES: block_size >= kMinStampBlockSize and a multiple of 8.
void EncodeStampedBlock(const Stamp& stamp, uint8_t* block, size_t block_size);

// Checks block[0, block_size) and, on kOk, stores its stamp in *stamp.
StampCheck DecodeStampedBlock(const uint8_t* block, size_t block_size, Stamp* stamp);

}  // namespace tandem::testtools

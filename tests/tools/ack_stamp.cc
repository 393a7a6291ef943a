#include "tests/tools/ack_stamp.h"

#include <cstring>

#include "common/coding.h"
#include "common/crc32c.h"

namespace tandem::testtools {

namespace {

constexpr size_t kCrcOffset = 36;

// splitmix64: a cheap, well-mixed filler so that two writes of the same block
// never carry the same bytes past the header.
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint32_t BlockCrc(const uint8_t* block, size_t block_size) {
  static constexpr uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t crc = Crc32cExtend(0, block, kCrcOffset);
  crc = Crc32cExtend(crc, kZero, sizeof(kZero));
  return Crc32cExtend(crc, block + kCrcOffset + 4, block_size - kCrcOffset - 4);
}

}  // namespace

const char* StampCheckName(StampCheck check) {
  switch (check) {
    case StampCheck::kOk:
      return "OK";
    case StampCheck::kUnwritten:
      return "UNWRITTEN";
    case StampCheck::kNoStamp:
      return "NO_STAMP";
    case StampCheck::kBadSize:
      return "BAD_SIZE";
    case StampCheck::kBadCrc:
      return "BAD_CRC";
  }
  return "?";
}

void EncodeStampedBlock(const Stamp& stamp, uint8_t* block, size_t block_size) {
  std::memset(block, 0, kStampHeaderSize);
  EncodeFixed64(block + 0, kStampMagic);
  EncodeFixed64(block + 8, stamp.offset);
  EncodeFixed64(block + 16, stamp.seq);
  EncodeFixed64(block + 24, stamp.writer_id);
  EncodeFixed32(block + 32, static_cast<uint32_t>(block_size));
  uint64_t state = stamp.seq ^ (stamp.offset * 0x9e3779b97f4a7c15ull) ^ stamp.writer_id;
  for (size_t i = kStampHeaderSize; i + 8 <= block_size; i += 8) {
    EncodeFixed64(block + i, SplitMix64(&state));
  }
  EncodeFixed32(block + kCrcOffset, BlockCrc(block, block_size));
}

StampCheck DecodeStampedBlock(const uint8_t* block, size_t block_size, Stamp* stamp) {
  if (DecodeFixed64(block) != kStampMagic) {
    for (size_t i = 0; i < block_size; ++i) {
      if (block[i] != 0) return StampCheck::kNoStamp;
    }
    return StampCheck::kUnwritten;
  }
  if (DecodeFixed32(block + 32) != block_size) return StampCheck::kBadSize;
  if (DecodeFixed32(block + kCrcOffset) != BlockCrc(block, block_size)) {
    return StampCheck::kBadCrc;
  }
  stamp->offset = DecodeFixed64(block + 8);
  stamp->seq = DecodeFixed64(block + 16);
  stamp->writer_id = DecodeFixed64(block + 24);
  return StampCheck::kOk;
}

}  // namespace tandem::testtools

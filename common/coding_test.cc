#include "common/coding.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(CodingTest, ExplicitLittleEndianByteOrder) {
  uint8_t b[8];
  EncodeFixed16(b, 0x0102);
  EXPECT_EQ(b[0], 0x02);
  EXPECT_EQ(b[1], 0x01);
  EncodeFixed32(b, 0x01020304);
  const uint8_t e32[] = {0x04, 0x03, 0x02, 0x01};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b[i], e32[i]) << i;
  EncodeFixed64(b, 0x0102030405060708ull);
  const uint8_t e64[] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(b[i], e64[i]) << i;

  const uint8_t in[] = {0xEF, 0xBE, 0xAD, 0xDE, 0x78, 0x56, 0x34, 0x12};
  EXPECT_EQ(DecodeFixed16(in), 0xBEEFu);
  EXPECT_EQ(DecodeFixed32(in), 0xDEADBEEFu);
  EXPECT_EQ(DecodeFixed64(in), 0x12345678DEADBEEFull);
}

TEST(CodingTest, RoundTripsBoundaryValues) {
  uint8_t b[8];
  for (uint16_t v : {uint16_t{0}, uint16_t{1}, uint16_t{0x80}, uint16_t{0xFF}, uint16_t{0x100},
                     uint16_t{0x7FFF}, uint16_t{0xFFFF}}) {
    EncodeFixed16(b, v);
    EXPECT_EQ(DecodeFixed16(b), v);
  }
  for (uint32_t v : {0u, 1u, 0xFFu, 0x100u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu}) {
    EncodeFixed32(b, v);
    EXPECT_EQ(DecodeFixed32(b), v);
  }
  for (uint64_t v : {0ull, 1ull, 0xFFFFFFFFull, 0x100000000ull, 0x8000000000000000ull, ~0ull}) {
    EncodeFixed64(b, v);
    EXPECT_EQ(DecodeFixed64(b), v);
  }
  uint64_t v = 1;
  for (int shift = 0; shift < 64; ++shift, v <<= 1) {
    EncodeFixed64(b, v);
    EXPECT_EQ(DecodeFixed64(b), v) << shift;
  }
}

TEST(CodingTest, WorksAtUnalignedAddresses) {
  uint8_t buf[16] = {};
  for (int off = 0; off < 8; ++off) {
    EncodeFixed64(buf + off, 0xA1B2C3D4E5F60718ull);
    EXPECT_EQ(DecodeFixed64(buf + off), 0xA1B2C3D4E5F60718ull) << off;
    EncodeFixed32(buf + off + 1, 0x11223344u);
    EXPECT_EQ(DecodeFixed32(buf + off + 1), 0x11223344u) << off;
  }
}

}  // namespace
}  // namespace tandem

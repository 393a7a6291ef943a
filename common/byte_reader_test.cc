#include "common/byte_reader.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem {
namespace {

TEST(ByteReaderTest, ReadsBackWhatTheWriterWrote) {
  std::string buf;
  ByteWriter w(&buf);
  w.U8(0xAB);
  w.U16(0xBEEF);
  w.U32(0xDEADBEEF);
  w.U64(0x0123456789ABCDEFull);
  w.String16("volume-1");
  w.Bytes("xyz");
  ASSERT_EQ(buf.size(), 1u + 2 + 4 + 8 + 2 + 8 + 3);
  EXPECT_EQ(static_cast<uint8_t>(buf[1]), 0xEF);  // little-endian

  ByteReader r(buf, "record");
  uint8_t a = 0;
  uint16_t b = 0;
  uint32_t c = 0;
  uint64_t d = 0;
  std::string s;
  std::string_view tail;
  ASSERT_TRUE(r.U8("a", &a).ok());
  ASSERT_TRUE(r.U16("b", &b).ok());
  ASSERT_TRUE(r.U32("c", &c).ok());
  ASSERT_TRUE(r.U64("d", &d).ok());
  ASSERT_TRUE(r.String16("s", 64, &s).ok());
  ASSERT_TRUE(r.Bytes("tail", 3, &tail).ok());
  EXPECT_EQ(a, 0xAB);
  EXPECT_EQ(b, 0xBEEF);
  EXPECT_EQ(c, 0xDEADBEEFu);
  EXPECT_EQ(d, 0x0123456789ABCDEFull);
  EXPECT_EQ(s, "volume-1");
  EXPECT_EQ(tail, "xyz");
  EXPECT_TRUE(r.Finish().ok());
}

TEST(ByteReaderTest, EveryTruncationIsReportedWithTheFieldAndNeverOverruns) {
  std::string buf;
  ByteWriter w(&buf);
  w.U32(7);
  w.U64(9);
  w.String16("abcdef");
  for (size_t n = 0; n < buf.size(); ++n) {
    // A copy of exactly n bytes, so a read past it would be seen by ASan.
    std::string cut = buf.substr(0, n);
    ByteReader r(cut, "hello");
    uint32_t x = 0;
    uint64_t y = 0;
    std::string s;
    Status st = r.U32("x", &x);
    if (st.ok()) st = r.U64("y", &y);
    if (st.ok()) st = r.String16("name", 64, &s);
    ASSERT_EQ(st.code(), StatusCode::kInvalidArgument) << n;
    EXPECT_EQ(st.message().rfind("hello: truncated at ", 0), 0u) << st.ToString();
    EXPECT_LE(r.pos(), n);
  }
}

TEST(ByteReaderTest, LimitsAndTrailingBytesAreErrors) {
  std::string buf;
  ByteWriter w(&buf);
  w.String16("abcdef");
  w.U8(1);
  ByteReader r(buf, "hello");
  std::string s;
  Status st = r.String16("volume_id", 4, &s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("volume_id length 6 exceeds 4"), std::string::npos) << st.ToString();
  EXPECT_EQ(r.pos(), 0u);  // a failed read does not move
  ASSERT_TRUE(r.String16("volume_id", 6, &s).ok());
  st = r.Finish();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("1 trailing bytes"), std::string::npos) << st.ToString();
  EXPECT_TRUE(r.Skip("pad", 1).ok());
  EXPECT_TRUE(r.Finish().ok());
}

}  // namespace
}  // namespace tandem

// Unit tests of the verifier's block stamp and acknowledged-write log.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/tools/ack_log.h"
#include "tests/tools/ack_stamp.h"

namespace tandem::testtools {
namespace {

TEST(AckStampTest, EncodeDecodeRoundTripsEveryField) {
  std::vector<uint8_t> block(4096);
  Stamp in{123 * 4096, (7ull << kRunSeqShift) + 42, 0xfeedfacecafebeefull};
  EncodeStampedBlock(in, block.data(), block.size());
  Stamp out;
  ASSERT_EQ(DecodeStampedBlock(block.data(), block.size(), &out), StampCheck::kOk);
  EXPECT_EQ(out.offset, in.offset);
  EXPECT_EQ(out.seq, in.seq);
  EXPECT_EQ(out.writer_id, in.writer_id);
}

TEST(AckStampTest, DifferentSeqsFillDifferentPayloads) {
  std::vector<uint8_t> a(4096), b(4096);
  EncodeStampedBlock(Stamp{0, 1, 9}, a.data(), a.size());
  EncodeStampedBlock(Stamp{0, 2, 9}, b.data(), b.size());
  EXPECT_NE(std::vector<uint8_t>(a.begin() + kStampHeaderSize, a.end()),
            std::vector<uint8_t>(b.begin() + kStampHeaderSize, b.end()));
}

TEST(AckStampTest, AnyFlippedByteIsBadCrc) {
  std::vector<uint8_t> block(4096);
  EncodeStampedBlock(Stamp{8192, 5, 1}, block.data(), block.size());
  for (size_t pos : {size_t{8}, size_t{16}, size_t{40}, size_t{64}, size_t{4095}}) {
    std::vector<uint8_t> copy = block;
    copy[pos] ^= 0x01;
    Stamp s;
    EXPECT_EQ(DecodeStampedBlock(copy.data(), copy.size(), &s), StampCheck::kBadCrc) << pos;
  }
}

TEST(AckStampTest, ZeroBlockIsUnwrittenAndOtherDataIsNoStamp) {
  std::vector<uint8_t> block(4096, 0);
  Stamp s;
  EXPECT_EQ(DecodeStampedBlock(block.data(), block.size(), &s), StampCheck::kUnwritten);
  block[100] = 1;
  EXPECT_EQ(DecodeStampedBlock(block.data(), block.size(), &s), StampCheck::kNoStamp);
}

TEST(AckStampTest, StampOfAnotherBlockSizeIsBadSize) {
  std::vector<uint8_t> block(8192);
  EncodeStampedBlock(Stamp{0, 1, 1}, block.data(), block.size());
  Stamp s;
  EXPECT_EQ(DecodeStampedBlock(block.data(), 4096, &s), StampCheck::kBadSize);
}

TEST(AckLogTest, NewestAckedSeqPerOffsetAcrossRuns) {
  auto log = ParseAckLog(
      "# tandem ack_verifier log v1\n"
      "R 1 abc 4096 0 1048576\n"
      "A 0 1099511627777\n"
      "A 4096 1099511627779\n"
      "A 0 1099511627778\n"
      "F 8192 1099511627780 5\n"
      "R 2 def 4096 0 1048576\n"
      "A 4096 2199023255553\n");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(log->runs.size(), 2u);
  EXPECT_EQ(log->runs[0].writer_id, 0xabcu);
  EXPECT_EQ(log->runs[1].run, 2u);
  EXPECT_EQ(log->runs[1].region_length, 1048576u);
  EXPECT_EQ(log->acked, 4u);
  EXPECT_EQ(log->failed, 1u);
  EXPECT_EQ(log->newest_acked.at(0), 1099511627778u);
  EXPECT_EQ(log->newest_acked.at(4096), 2199023255553u);
  EXPECT_EQ(log->newest_failed.at(8192), 1099511627780u);
  EXPECT_FALSE(log->torn_tail);
}

TEST(AckLogTest, AcksAfterAFenceMarkAreFencedAndJudgedLikeFailedWrites) {
  // Run 1 (seqs 1<<40 + n): the mark says writes from n=3 on were issued after
  // a newer target took over; n=2 acked late is still a normal ack. Run 2's
  // acks are normal again.
  auto log = ParseAckLog(
      "R 1 a 4096 0 65536\n"
      "A 0 1099511627777\n"
      "M 1099511627779\n"
      "A 4096 1099511627778\n"
      "A 0 1099511627779\n"
      "A 8192 1099511627780\n"
      "R 2 b 4096 0 65536\n"
      "A 8192 2199023255553\n");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(log->acked, 5u);
  EXPECT_EQ(log->fenced_acked, 2u);
  EXPECT_EQ(log->fence_marks, 1u);
  EXPECT_EQ(log->newest_acked.at(0), 1099511627777u);   // the fenced ack does not count
  EXPECT_EQ(log->newest_failed.at(0), 1099511627779u);  // ... either content is accepted
  EXPECT_EQ(log->newest_acked.at(4096), 1099511627778u);
  EXPECT_EQ(log->newest_acked.at(8192), 2199023255553u);
}

TEST(AckLogTest, FenceMarkOutsideItsRunIsDataLoss) {
  auto log = ParseAckLog("R 1 a 4096 0 65536\nM 2199023255553\n");
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kDataLoss);
}

TEST(AckLogTest, TornLastLineIsIgnored) {
  auto log = ParseAckLog("R 1 1 4096 0 8192\nA 0 5\nA 40");
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE(log->torn_tail);
  EXPECT_EQ(log->acked, 1u);
  EXPECT_EQ(log->newest_acked.count(40), 0u);
}

TEST(AckLogTest, MalformedLinesAreDataLossNamingTheLine) {
  for (const char* text : {"R 1 1 4096 0 8192\nA 0\n", "R 1 1 4096 0 8192\nA x 5\n", "A 0 5\n",
                           "R 1 1 4096 0 8192\nQ 1 2\n", "R 0 1 4096 0 8192\n",
                           "R 1 1 4096 0 8192\nR 2 1 512 0 8192\n",
                           "R 1 1 4096 0 8192\nA 99999999999999999999999 1\n"}) {
    auto log = ParseAckLog(text);
    ASSERT_FALSE(log.ok()) << text;
    EXPECT_EQ(log.status().code(), StatusCode::kDataLoss) << text;
    EXPECT_NE(log.status().message().find("line"), std::string::npos);
  }
}

class AckLogWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/var/tmp/ack_log_test." + std::to_string(getpid()) + "." +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::remove(path_.c_str());
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::string path_;
};

TEST_F(AckLogWriterTest, RunsAppendAndNumberTheirSeqsAboveEarlierRuns) {
  {
    auto w = AckLogWriter::Open(path_, 0x11, 4096, 0, 65536);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ((*w)->run(), 1u);
    (*w)->Acked(0, (*w)->seq_base() + 1);
    (*w)->Failed(4096, (*w)->seq_base() + 2, 5);
    ASSERT_TRUE((*w)->Close().ok());
  }
  {
    auto w = AckLogWriter::Open(path_, 0x22, 4096, 0, 65536);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ((*w)->run(), 2u);
    EXPECT_GT((*w)->seq_base() + 1, (1ull << kRunSeqShift) + 2);
    (*w)->Acked(0, (*w)->seq_base() + 1);
    ASSERT_TRUE((*w)->Fence((*w)->seq_base() + 2).ok());
    (*w)->Acked(4096, (*w)->seq_base() + 2);
  }  // destructor syncs
  auto log = ReadAckLog(path_);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(log->runs.size(), 2u);
  EXPECT_EQ(log->newest_acked.at(0), (2ull << kRunSeqShift) + 1);
  EXPECT_EQ(log->newest_failed.at(4096), (2ull << kRunSeqShift) + 2);  // fenced ack
  EXPECT_EQ(log->fenced_acked, 1u);
}

TEST_F(AckLogWriterTest, OpenCutsATornTailBeforeAppending) {
  {
    std::ofstream f(path_);
    f << "# tandem ack_verifier log v1\nR 1 1 4096 0 65536\nA 0 1099511627777\nA 40";
  }
  auto w = AckLogWriter::Open(path_, 2, 4096, 0, 65536);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  (*w)->Acked(8192, (*w)->seq_base() + 1);
  ASSERT_TRUE((*w)->Close().ok());
  auto log = ReadAckLog(path_);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_FALSE(log->torn_tail);
  EXPECT_EQ(log->acked, 2u);
  EXPECT_EQ(log->runs.size(), 2u);
}

TEST_F(AckLogWriterTest, OpenRefusesAnotherBlockSize) {
  ASSERT_TRUE(AckLogWriter::Open(path_, 1, 4096, 0, 65536).ok());
  auto w = AckLogWriter::Open(path_, 1, 512, 0, 65536);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
}

TEST(AckLogReadTest, MissingFileIsNotFound) {
  auto log = ReadAckLog("/var/tmp/no-such-ack-log-for-sure");
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem::testtools

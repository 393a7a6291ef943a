#include "replica-engine/frontend/nbd_protocol.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace tandem::frontend::nbd {
namespace {

std::vector<uint8_t> InfoPayload(std::string_view name, std::vector<uint16_t> types) {
  std::vector<uint8_t> v(4 + name.size() + 2 + 2 * types.size());
  PutBe32(v.data(), static_cast<uint32_t>(name.size()));
  memcpy(v.data() + 4, name.data(), name.size());
  PutBe16(v.data() + 4 + name.size(), static_cast<uint16_t>(types.size()));
  for (size_t i = 0; i < types.size(); ++i) PutBe16(v.data() + 6 + name.size() + 2 * i, types[i]);
  return v;
}

TEST(NbdProtocolTest, BigEndianHelpersRoundTrip) {
  uint8_t b[8];
  PutBe64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(b[7], 8);
  EXPECT_EQ(GetBe64(b), 0x0102030405060708ull);
  PutBe32(b, 0xdeadbeef);
  EXPECT_EQ(GetBe32(b), 0xdeadbeefu);
  PutBe16(b, 0xbeef);
  EXPECT_EQ(GetBe16(b), 0xbeef);
}

TEST(NbdProtocolTest, GreetingMatchesSpecBytes) {
  uint8_t g[kGreetingSize];
  EncodeGreeting(kFlagFixedNewstyle | kFlagNoZeroes, g);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(g), 16), "NBDMAGICIHAVEOPT");
  EXPECT_EQ(GetBe16(g + 16), 3);
}

TEST(NbdProtocolTest, ClientFlagsRejectsUnknownBits) {
  uint8_t b[4];
  uint32_t flags = 0;
  PutBe32(b, kClientFlagFixedNewstyle | kClientFlagNoZeroes);
  EXPECT_EQ(ParseClientFlags(b, 4, &flags), ParseResult::kOk);
  EXPECT_EQ(flags, 3u);
  PutBe32(b, 1u << 5);
  EXPECT_EQ(ParseClientFlags(b, 4, &flags), ParseResult::kUnknownFlags);
  EXPECT_EQ(ParseClientFlags(b, 3, &flags), ParseResult::kIncomplete);
}

TEST(NbdProtocolTest, OptionHeaderChecksMagicAndLength) {
  uint8_t h[kOptionHeaderSize];
  PutBe64(h, kIHaveOpt);
  PutBe32(h + 8, kOptGo);
  PutBe32(h + 12, 42);
  OptionHeader oh;
  ASSERT_EQ(ParseOptionHeader(h, sizeof(h), &oh), ParseResult::kOk);
  EXPECT_EQ(oh.option, kOptGo);
  EXPECT_EQ(oh.length, 42u);
  EXPECT_EQ(ParseOptionHeader(h, 15, &oh), ParseResult::kIncomplete);
  PutBe32(h + 12, kMaxOptionLength + 1);
  EXPECT_EQ(ParseOptionHeader(h, sizeof(h), &oh), ParseResult::kTooLong);
  PutBe64(h, kNbdMagic);
  EXPECT_EQ(ParseOptionHeader(h, sizeof(h), &oh), ParseResult::kBadMagic);
}

TEST(NbdProtocolTest, InfoRequestParsesNameAndRequestedTypes) {
  auto p = InfoPayload("vol-1", {kInfoBlockSize, kInfoName, 999});
  InfoRequest info;
  ASSERT_EQ(ParseInfoRequest(p.data(), p.size(), &info), ParseResult::kOk);
  EXPECT_EQ(info.name, "vol-1");
  EXPECT_EQ(info.num_requests, 3);
  EXPECT_TRUE(info.Requested(kInfoBlockSize));
  EXPECT_TRUE(info.Requested(kInfoName));
  EXPECT_FALSE(info.Requested(kInfoDescription));
}

TEST(NbdProtocolTest, InfoRequestRejectsInconsistentLengths) {
  InfoRequest info;
  auto p = InfoPayload("vol", {kInfoBlockSize});
  // Truncated by one byte, one byte too long, name length beyond the data.
  EXPECT_EQ(ParseInfoRequest(p.data(), p.size() - 1, &info), ParseResult::kMalformed);
  p.push_back(0);
  EXPECT_EQ(ParseInfoRequest(p.data(), p.size(), &info), ParseResult::kMalformed);
  p.pop_back();
  PutBe32(p.data(), 0xffffffffu);
  EXPECT_EQ(ParseInfoRequest(p.data(), p.size(), &info), ParseResult::kMalformed);
  EXPECT_EQ(ParseInfoRequest(p.data(), 5, &info), ParseResult::kMalformed);
  auto empty = InfoPayload("", {});
  ASSERT_EQ(ParseInfoRequest(empty.data(), empty.size(), &info), ParseResult::kOk);
  EXPECT_TRUE(info.name.empty());
}

TEST(NbdProtocolTest, RequestRoundTripsAndRejectsBadMagic) {
  Request r;
  r.flags = kCmdFlagFua;
  r.type = kCmdWrite;
  r.cookie = 0x1122334455667788ull;
  r.offset = 1ull << 40;
  r.length = 4096;
  uint8_t b[kRequestSize];
  EncodeRequest(r, b);
  Request out;
  ASSERT_EQ(ParseRequest(b, sizeof(b), &out), ParseResult::kOk);
  EXPECT_EQ(out.flags, r.flags);
  EXPECT_EQ(out.type, r.type);
  EXPECT_EQ(out.cookie, r.cookie);
  EXPECT_EQ(out.offset, r.offset);
  EXPECT_EQ(out.length, r.length);
  EXPECT_EQ(ParseRequest(b, kRequestSize - 1, &out), ParseResult::kIncomplete);
  b[0] ^= 1;
  EXPECT_EQ(ParseRequest(b, sizeof(b), &out), ParseResult::kBadMagic);
}

Request Req(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
  Request r;
  r.type = type;
  r.offset = offset;
  r.length = length;
  r.flags = flags;
  return r;
}

TEST(NbdProtocolTest, ValidateReturnsSpecErrors) {
  ExportGeometry g;
  g.size = 1 << 20;
  g.block_size = 4096;
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, 0, 4096), g), 0u);
  EXPECT_EQ(ValidateRequest(Req(kCmdWrite, g.size - 4096, 4096, kCmdFlagFua), g), 0u);
  EXPECT_EQ(ValidateRequest(Req(kCmdWriteZeroes, 0, 8192, kCmdFlagNoHole), g), 0u);
  EXPECT_EQ(ValidateRequest(Req(kCmdFlush, 0, 0, kCmdFlagFua), g), 0u);
  EXPECT_EQ(ValidateRequest(Req(kCmdDisc, 123, 456), g), 0u);
  // Misaligned offset or length.
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, 512, 4096), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdWrite, 0, 512), g), kErrInval);
  // Beyond the end: EINVAL for read and trim, ENOSPC for writes.
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, g.size, 4096), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdTrim, g.size - 4096, 8192), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdWrite, g.size, 4096), g), kErrNoSpc);
  EXPECT_EQ(ValidateRequest(Req(kCmdWriteZeroes, g.size - 4096, 8192), g), kErrNoSpc);
  // offset + length overflowing 64 bits is out of range, not a wrap.
  EXPECT_EQ(ValidateRequest(Req(kCmdWrite, ~0ull - 4095, 4096), g), kErrNoSpc);
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, (~0ull) & ~4095ull, 4096), g), kErrInval);
  // Zero length, unknown command, flags not valid for the command.
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, 0, 0), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(99, 0, 4096), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdBlockStatus, 0, 4096), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdWrite, 0, 4096, kCmdFlagNoHole), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, 0, 4096, kCmdFlagDf), g), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdWriteZeroes, 0, 4096, kCmdFlagFastZero), g), kErrInval);
  // Above the 32 MiB payload limit.
  ExportGeometry big;
  big.size = 1ull << 30;
  big.block_size = 512;
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, 0, kMaxPayload), big), 0u);
  EXPECT_EQ(ValidateRequest(Req(kCmdRead, 0, kMaxPayload + 512), big), kErrInval);
  EXPECT_EQ(ValidateRequest(Req(kCmdTrim, 0, kMaxPayload + 512), big), 0u);
}

TEST(NbdProtocolTest, OptionRepliesHaveSpecLayout) {
  std::string out;
  AppendInfoExport(kOptGo, 1ull << 30, kTxHasFlags | kTxSendFlush, &out);
  ASSERT_EQ(out.size(), kOptionReplyHeaderSize + 12);
  auto* b = reinterpret_cast<const uint8_t*>(out.data());
  EXPECT_EQ(GetBe64(b), kOptReplyMagic);
  EXPECT_EQ(GetBe32(b + 8), kOptGo);
  EXPECT_EQ(GetBe32(b + 12), kRepInfo);
  EXPECT_EQ(GetBe32(b + 16), 12u);
  EXPECT_EQ(GetBe16(b + 20), kInfoExport);
  EXPECT_EQ(GetBe64(b + 22), 1ull << 30);
  EXPECT_EQ(GetBe16(b + 30), kTxHasFlags | kTxSendFlush);

  out.clear();
  AppendInfoBlockSize(kOptInfo, 512, 4096, 1 << 20, &out);
  ASSERT_EQ(out.size(), kOptionReplyHeaderSize + 14);
  b = reinterpret_cast<const uint8_t*>(out.data());
  EXPECT_EQ(GetBe16(b + 20), kInfoBlockSize);
  EXPECT_EQ(GetBe32(b + 22), 512u);
  EXPECT_EQ(GetBe32(b + 26), 4096u);
  EXPECT_EQ(GetBe32(b + 30), 1u << 20);

  out.clear();
  AppendServerReply("vol", &out);
  ASSERT_EQ(out.size(), kOptionReplyHeaderSize + 7);
  b = reinterpret_cast<const uint8_t*>(out.data());
  EXPECT_EQ(GetBe32(b + 12), kRepServer);
  EXPECT_EQ(GetBe32(b + 20), 3u);
  EXPECT_EQ(out.substr(24), "vol");

  out.clear();
  AppendExportNameReply(4096, kTxHasFlags, false, &out);
  EXPECT_EQ(out.size(), 10 + kExportNameReplyZeroes);
  out.clear();
  AppendExportNameReply(4096, kTxHasFlags, true, &out);
  EXPECT_EQ(out.size(), 10u);

  uint8_t r[kSimpleReplySize];
  EncodeSimpleReply(kErrNoSpc, 77, r);
  EXPECT_EQ(GetBe32(r), kSimpleReplyMagic);
  EXPECT_EQ(GetBe32(r + 4), kErrNoSpc);
  EXPECT_EQ(GetBe64(r + 8), 77u);
}

}  // namespace
}  // namespace tandem::frontend::nbd

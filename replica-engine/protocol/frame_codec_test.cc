#include "replica-engine/protocol/frame_codec.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/coding.h"
#include "common/crc32c.h"
#include "gtest/gtest.h"

namespace tandem::protocol {
namespace {

FrameHeader SampleHeader() {
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kWrite);
  h.flags = kFlagFua;
  h.request_id = 0x0102030405060708ull;
  h.offset = 0x1122334455667788ull;
  h.length = 4096;
  h.payload_length = 4096;
  h.status = WireStatus::kOk;
  h.payload_crc = 0xCAFEBABE;
  return h;
}

// Rewrites header_crc after a test has modified a field, so the decoder gets
// past the crc check to the check under test.
void Reseal(uint8_t* buf) { EncodeFixed32(buf + 44, Crc32c(buf, 44)); }

void ExpectSameHeader(const FrameHeader& a, const FrameHeader& b) {
  EXPECT_EQ(a.opcode, b.opcode);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.offset, b.offset);
  EXPECT_EQ(a.length, b.length);
  EXPECT_EQ(a.payload_length, b.payload_length);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.payload_crc, b.payload_crc);
}

TEST(FrameCodecTest, HeaderRoundTrip) {
  uint8_t buf[kHeaderSize];
  FrameHeader in = SampleHeader();
  EncodeHeader(in, buf);
  FrameHeader out;
  ASSERT_EQ(DecodeHeader(buf, &out), DecodeResult::kOk);
  ExpectSameHeader(in, out);
  EXPECT_FALSE(out.is_reply());
  EXPECT_EQ(out.op(), Opcode::kWrite);

  FrameHeader reply;
  reply.opcode = static_cast<uint8_t>(Opcode::kRead) | kReplyBit;
  reply.request_id = 7;
  reply.status = WireStatus::kStaleEpoch;
  EncodeHeader(reply, buf);
  ASSERT_EQ(DecodeHeader(buf, &out), DecodeResult::kOk);
  ExpectSameHeader(reply, out);
  EXPECT_TRUE(out.is_reply());
  EXPECT_EQ(out.op(), Opcode::kRead);
}

// Pins the byte layout: a change here is a wire-format change and needs a
// protocol version bump (docs/protocol.md).
TEST(FrameCodecTest, GoldenHeaderBytes) {
  uint8_t buf[kHeaderSize];
  EncodeHeader(SampleHeader(), buf);
  const uint8_t expected[44] = {
      0x54, 0x4E, 0x44, 0x4D,                          // magic "TNDM"
      0x01,                                            // version
      0x03,                                            // opcode WRITE
      0x01, 0x00,                                      // flags FUA
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // request_id
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // offset
      0x00, 0x10, 0x00, 0x00,                          // length 4096
      0x00, 0x10, 0x00, 0x00,                          // payload_length 4096
      0x00, 0x00, 0x00, 0x00,                          // status
      0x00, 0x00, 0x00, 0x00,                          // reserved
      0xBE, 0xBA, 0xFE, 0xCA,                          // payload_crc
  };
  EXPECT_EQ(std::memcmp(buf, expected, sizeof(expected)), 0);
  EXPECT_EQ(DecodeFixed32(buf + 44), Crc32c(expected, sizeof(expected)));
}

TEST(FrameCodecTest, BadMagic) {
  uint8_t buf[kHeaderSize];
  EncodeHeader(SampleHeader(), buf);
  buf[0] = 'X';
  Reseal(buf);
  FrameHeader h;
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kBadMagic);
}

TEST(FrameCodecTest, BadVersion) {
  uint8_t buf[kHeaderSize];
  EncodeHeader(SampleHeader(), buf);
  buf[4] = kProtocolVersion + 1;
  Reseal(buf);
  FrameHeader h;
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kBadVersion);
}

TEST(FrameCodecTest, EveryFlippedBitAfterVersionFailsTheHeaderCrc) {
  uint8_t good[kHeaderSize];
  EncodeHeader(SampleHeader(), good);
  for (size_t bit = 5 * 8; bit < kHeaderSize * 8; ++bit) {
    uint8_t buf[kHeaderSize];
    std::memcpy(buf, good, sizeof(buf));
    buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    FrameHeader h;
    EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kBadHeaderCrc) << "bit " << bit;
  }
}

TEST(FrameCodecTest, UnknownFlagBits) {
  FrameHeader in = SampleHeader();
  in.flags = kFlagFua | 0x8000;
  uint8_t buf[kHeaderSize];
  EncodeHeader(in, buf);
  FrameHeader h;
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kBadFlags);
}

TEST(FrameCodecTest, ActivityFlagIsKnownAndTheNextBitIsNot) {
  FrameHeader in = SampleHeader();
  in.opcode = static_cast<uint8_t>(Opcode::kGetDirtyMap);
  in.payload_length = 0;
  in.flags = kFlagActivity;
  EXPECT_EQ(kFlagActivity, 1u << 2);
  uint8_t buf[kHeaderSize];
  EncodeHeader(in, buf);
  FrameHeader h;
  ASSERT_EQ(DecodeHeader(buf, &h), DecodeResult::kOk);
  EXPECT_EQ(h.flags, kFlagActivity);
  in.flags = 1u << 3;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kBadFlags);
}

TEST(FrameCodecTest, PayloadLimits) {
  uint8_t buf[kHeaderSize];
  FrameHeader h;
  FrameHeader in = SampleHeader();

  // WRITE requests and READ replies may carry kMaxPayload, not more.
  in.payload_length = kMaxPayload;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOk);
  in.payload_length = kMaxPayload + 1;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOversized);
  in.opcode = static_cast<uint8_t>(Opcode::kRead) | kReplyBit;
  in.payload_length = kMaxPayload;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOk);
  in.payload_length = 0xFFFFFFFF;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOversized);
  // GET_DIRTY_MAP replies carry bitmaps up to kMaxPayload too.
  in.opcode = static_cast<uint8_t>(Opcode::kGetDirtyMap) | kReplyBit;
  in.payload_length = kMaxPayload;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOk);
  in.payload_length = kMaxPayload + 1;
  EncodeHeader(in, buf);
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOversized);

  // Everything else is a control frame.
  const uint8_t control[] = {
      static_cast<uint8_t>(Opcode::kHello),
      static_cast<uint8_t>(Opcode::kHello) | kReplyBit,
      static_cast<uint8_t>(Opcode::kRead),
      static_cast<uint8_t>(Opcode::kWrite) | kReplyBit,
      static_cast<uint8_t>(Opcode::kFlush),
      static_cast<uint8_t>(Opcode::kTrim),
      static_cast<uint8_t>(Opcode::kWriteZeroes),
      static_cast<uint8_t>(Opcode::kGetInfo),
      static_cast<uint8_t>(Opcode::kGetInfo) | kReplyBit,
      static_cast<uint8_t>(Opcode::kSetGeneration),
      static_cast<uint8_t>(Opcode::kMarkDirty),
      static_cast<uint8_t>(Opcode::kClearDirty),
      static_cast<uint8_t>(Opcode::kGetDirtyMap),  // the request; its reply is a data frame
      20,                                          // reserved opcode
  };
  for (uint8_t op : control) {
    in.opcode = op;
    in.payload_length = kMaxControlPayload;
    EncodeHeader(in, buf);
    EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOk) << OpcodeName(op);
    in.payload_length = kMaxControlPayload + 1;
    EncodeHeader(in, buf);
    EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kOversized) << OpcodeName(op);
  }
}

TEST(FrameCodecTest, FailedDecodeLeavesOutputUntouched) {
  uint8_t buf[kHeaderSize];
  EncodeHeader(SampleHeader(), buf);
  buf[10] ^= 1;
  FrameHeader h;
  h.request_id = 99;
  EXPECT_EQ(DecodeHeader(buf, &h), DecodeResult::kBadHeaderCrc);
  EXPECT_EQ(h.request_id, 99u);
}

TEST(FrameCodecTest, CheckPayloadDetectsAFlippedBit) {
  std::string payload(4096, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 31);
  FrameHeader h = SampleHeader();
  h.payload_length = static_cast<uint32_t>(payload.size());
  h.payload_crc = Crc32c(payload.data(), payload.size());
  EXPECT_TRUE(CheckPayload(h, payload.data()));
  payload[1234] ^= 0x10;
  EXPECT_FALSE(CheckPayload(h, payload.data()));

  FrameHeader empty;
  EXPECT_TRUE(CheckPayload(empty, nullptr));
}

TEST(FrameCodecTest, NamesAreStable) {
  EXPECT_STREQ(OpcodeName(static_cast<uint8_t>(Opcode::kWriteZeroes)), "WRITE_ZEROES");
  EXPECT_STREQ(OpcodeName(static_cast<uint8_t>(Opcode::kHello) | kReplyBit), "HELLO");
  EXPECT_STREQ(OpcodeName(31), "UNKNOWN");
  EXPECT_STREQ(OpcodeName(8), "SET_GENERATION");
  EXPECT_STREQ(OpcodeName(9), "MARK_DIRTY");
  EXPECT_STREQ(OpcodeName(10), "GET_DIRTY_MAP");
  EXPECT_STREQ(OpcodeName(11), "CLEAR_DIRTY");
  EXPECT_STREQ(WireStatusName(WireStatus::kStaleEpoch), "STALE_EPOCH");
  EXPECT_STREQ(WireStatusName(static_cast<WireStatus>(1000)), "UNKNOWN");
  EXPECT_STREQ(DecodeResultName(DecodeResult::kOversized), "payload length over limit");
}

TEST(FrameCodecTest, HelloRoundTripAndLayout) {
  HelloRequest in;
  in.epoch = 0x0A0B0C0D0E0F1011ull;
  in.volume_id = "vol-1";
  in.token = "s3cret";
  in.target_id = 0x2122232425262728ull;
  std::string payload = "garbage that must be cleared";
  ASSERT_TRUE(EncodeHello(in, &payload).ok());
  ASSERT_EQ(payload.size(), 8u + 2 + 5 + 2 + 6 + 8);
  EXPECT_EQ(payload.substr(0, 8), std::string("\x11\x10\x0F\x0E\x0D\x0C\x0B\x0A", 8));
  EXPECT_EQ(payload.substr(8, 7), std::string("\x05\x00vol-1", 7));
  EXPECT_EQ(payload.substr(15, 8), std::string("\x06\x00s3cret", 8));
  EXPECT_EQ(payload.substr(23), std::string("\x28\x27\x26\x25\x24\x23\x22\x21", 8));

  HelloRequest out;
  ASSERT_TRUE(DecodeHello(payload, &out).ok());
  EXPECT_EQ(out.epoch, in.epoch);
  EXPECT_EQ(out.volume_id, in.volume_id);
  EXPECT_EQ(out.token, in.token);
  EXPECT_EQ(out.target_id, in.target_id);

  // An older target's HELLO ends after the token: target_id 0.
  ASSERT_TRUE(DecodeHello(payload.substr(0, 23), &out).ok());
  EXPECT_EQ(out.token, in.token);
  EXPECT_EQ(out.target_id, 0u);

  HelloRequest empty;
  ASSERT_TRUE(EncodeHello(empty, &payload).ok());
  EXPECT_EQ(payload.size(), 20u);
  ASSERT_TRUE(DecodeHello(payload, &out).ok());
  EXPECT_TRUE(out.volume_id.empty());
  EXPECT_TRUE(out.token.empty());
}

TEST(FrameCodecTest, ReplicaInfoRoundTrip) {
  ReplicaInfo in;
  in.size = 10ull << 30;
  in.block_size = 4096;
  in.max_inflight = 128;
  in.generation = 42;
  in.highest_epoch = 7;
  in.replica_id = std::string(kMaxVolumeIdLength, 'r');
  std::string payload;
  ASSERT_TRUE(EncodeReplicaInfo(in, &payload).ok());
  EXPECT_EQ(payload.size(), 34u + kMaxVolumeIdLength + 25u + 18u);
  ReplicaInfo out;
  ASSERT_TRUE(DecodeReplicaInfo(payload, &out).ok());
  EXPECT_EQ(out.size, in.size);
  EXPECT_EQ(out.block_size, in.block_size);
  EXPECT_EQ(out.max_inflight, in.max_inflight);
  EXPECT_EQ(out.generation, in.generation);
  EXPECT_EQ(out.highest_epoch, in.highest_epoch);
  EXPECT_EQ(out.replica_id, in.replica_id);
  EXPECT_FALSE(out.tracking_dirty);
  EXPECT_EQ(out.dirty_since_generation, 0u);
  EXPECT_EQ(out.rebuild_cursor, 0u);
  EXPECT_EQ(out.rebuild_generation, 0u);
  EXPECT_EQ(out.generation_id, 0u);
  EXPECT_TRUE(out.generation_history.empty());
  EXPECT_FALSE(out.clean_shutdown);
}

TEST(FrameCodecTest, DirtyMapBytesRoundsUpToWholeRegionsAndBytes) {
  EXPECT_EQ(DirtyMapBytes(10ull << 30, 64 * 1024), 20u * 1024);  // 10 GiB: 20 KiB
  EXPECT_EQ(DirtyMapBytes(64 * 1024, 64 * 1024), 1u);
  EXPECT_EQ(DirtyMapBytes(64 * 1024 + 4096, 64 * 1024), 1u);  // partial region: 2 bits
  EXPECT_EQ(DirtyMapBytes(9ull * 64 * 1024, 64 * 1024), 2u);
  EXPECT_EQ(DirtyMapBytes(512ull << 30, 64 * 1024), 1u << 20);  // one full frame's worth
  EXPECT_EQ(DirtyMapBytes(1 << 20, 0), 0u);
  EXPECT_EQ(DirtyMapBytes(UINT64_MAX, 512), (UINT64_MAX / 512 + 1) / 8);
}

TEST(FrameCodecTest, DirtyMapRoundTripAndLayout) {
  const std::string bits("\x81\x00\x10", 3);
  DirtyMapChunk in;
  in.region_size = 64 * 1024;
  in.volume_size = 24ull * 64 * 1024;  // 24 regions = 3 bytes
  in.bitmap = bits;
  std::string payload;
  ASSERT_TRUE(EncodeDirtyMap(in, &payload).ok());
  ASSERT_EQ(payload.size(), kDirtyMapPrefixSize + 3);
  const auto* p = reinterpret_cast<const uint8_t*>(payload.data());
  EXPECT_EQ(DecodeFixed32(p), 64u * 1024);
  EXPECT_EQ(DecodeFixed64(p + 4), in.volume_size);
  EXPECT_EQ(payload.substr(12), bits);
  DirtyMapChunk out;
  ASSERT_TRUE(DecodeDirtyMap(payload, &out).ok());
  EXPECT_EQ(out.region_size, in.region_size);
  EXPECT_EQ(out.volume_size, in.volume_size);
  EXPECT_EQ(out.bitmap, bits);
  // The decoded bitmap is a view into the payload, not a copy.
  EXPECT_EQ(out.bitmap.data(), payload.data() + kDirtyMapPrefixSize);
}

TEST(FrameCodecTest, BadDirtyMapsAreRejected) {
  const std::string one("\x01", 1);
  auto encode = [](uint32_t region, uint64_t size, std::string_view bitmap) {
    DirtyMapChunk c;
    c.region_size = region;
    c.volume_size = size;
    c.bitmap = bitmap;
    std::string out;
    return EncodeDirtyMap(c, &out).code();
  };
  EXPECT_EQ(encode(65536, 65536, one), StatusCode::kOk);
  EXPECT_EQ(encode(0, 65536, one), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode(256, 65536, one), StatusCode::kInvalidArgument);     // < 512
  EXPECT_EQ(encode(65535, 65536, one), StatusCode::kInvalidArgument);   // not a power of two
  EXPECT_EQ(encode(65536, 0, one), StatusCode::kInvalidArgument);       // empty volume
  EXPECT_EQ(encode(65536, 65536, ""), StatusCode::kInvalidArgument);    // empty bitmap
  EXPECT_EQ(encode(65536, 65536, "ab"), StatusCode::kInvalidArgument);  // longer than the map
  std::string huge(kMaxDirtyMapChunk + 1, '\0');
  EXPECT_EQ(encode(512, 1ull << 40, huge), StatusCode::kInvalidArgument);  // over the frame
  huge.pop_back();
  EXPECT_EQ(encode(512, 1ull << 40, huge), StatusCode::kOk);

  DirtyMapChunk c;
  c.region_size = 4096;
  c.volume_size = 1 << 20;  // 256 regions = 32 bytes
  std::string bitmap(32, '\xff');
  c.bitmap = bitmap;
  std::string payload;
  ASSERT_TRUE(EncodeDirtyMap(c, &payload).ok());
  DirtyMapChunk out;
  for (size_t n = 0; n < kDirtyMapPrefixSize + 1; ++n) {  // truncated prefix or empty bitmap
    EXPECT_EQ(DecodeDirtyMap(std::string_view(payload).substr(0, n), &out).code(),
              StatusCode::kInvalidArgument)
        << n;
  }
  EXPECT_EQ(DecodeDirtyMap(payload + "x", &out).code(), StatusCode::kInvalidArgument);
  // A failed decode leaves the output untouched.
  out.region_size = 7;
  EXPECT_FALSE(DecodeDirtyMap(payload.substr(0, 5), &out).ok());
  EXPECT_EQ(out.region_size, 7u);
}

TEST(FrameCodecTest, TruncatedAndTrailingPayloadsAreRejected) {
  HelloRequest hello;
  hello.epoch = 3;
  hello.volume_id = "vol-1";
  hello.token = "tok";
  std::string payload;
  ASSERT_TRUE(EncodeHello(hello, &payload).ok());
  HelloRequest out;
  for (size_t n = 0; n < payload.size(); ++n) {
    if (n == payload.size() - 8) continue;  // an older target's HELLO ends here
    Status st = DecodeHello(std::string_view(payload).substr(0, n), &out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << n;
  }
  EXPECT_NE(DecodeHello(payload.substr(0, 4), &out).message().find("epoch"), std::string::npos);
  EXPECT_NE(DecodeHello(payload.substr(0, 12), &out).message().find("volume_id"),
            std::string::npos);
  EXPECT_NE(DecodeHello(payload.substr(0, 16), &out).message().find("token"), std::string::npos);
  Status st = DecodeHello(payload + "x", &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("trailing"), std::string::npos);

  ReplicaInfo info;
  info.replica_id = "r1";
  ASSERT_TRUE(EncodeReplicaInfo(info, &payload).ok());
  ReplicaInfo iout;
  const size_t legacy = kReplicaInfoLegacySize + 2;  // an older replica's reply ends here
  const size_t rebuild = legacy + kReplicaInfoRebuildFieldsSize;  // or here
  for (size_t n = 0; n < payload.size(); ++n) {
    if (n == legacy || n == rebuild) continue;
    EXPECT_EQ(DecodeReplicaInfo(std::string_view(payload).substr(0, n), &iout).code(),
              StatusCode::kInvalidArgument)
        << n;
  }
  EXPECT_NE(DecodeReplicaInfo(payload.substr(0, 20), &iout).message().find("generation"),
            std::string::npos);
  EXPECT_EQ(DecodeReplicaInfo(payload + std::string(1, '\0'), &iout).code(),
            StatusCode::kInvalidArgument);
}

TEST(FrameCodecTest, ReplicaInfoRebuildFieldsRoundTrip) {
  ReplicaInfo in;
  in.size = 1ull << 30;
  in.block_size = 4096;
  in.generation = 9;
  in.replica_id = "r2";
  in.tracking_dirty = true;
  in.dirty_since_generation = 7;
  in.rebuild_cursor = 123 << 20;
  in.rebuild_generation = 8;
  std::string payload;
  ASSERT_TRUE(EncodeReplicaInfo(in, &payload).ok());
  ASSERT_EQ(payload.size(), kReplicaInfoLegacySize + 2 + kReplicaInfoRebuildFieldsSize +
                                kReplicaInfoGenerationFieldsSize);
  ReplicaInfo out;
  ASSERT_TRUE(DecodeReplicaInfo(payload, &out).ok());
  EXPECT_TRUE(out.tracking_dirty);
  EXPECT_EQ(out.dirty_since_generation, 7u);
  EXPECT_EQ(out.rebuild_cursor, 123u << 20);
  EXPECT_EQ(out.rebuild_generation, 8u);

  // An older replica's reply (no rebuild fields) decodes as "none".
  ReplicaInfo legacy;
  ASSERT_TRUE(DecodeReplicaInfo(payload.substr(0, kReplicaInfoLegacySize + 2), &legacy).ok());
  EXPECT_EQ(legacy.replica_id, "r2");
  EXPECT_EQ(legacy.generation, 9u);
  EXPECT_FALSE(legacy.tracking_dirty);
  EXPECT_EQ(legacy.dirty_since_generation, 0u);
  EXPECT_EQ(legacy.rebuild_cursor, 0u);

  // Non-canonical values are refused both ways.
  std::string bad = payload;
  bad[kReplicaInfoLegacySize + 2] = 2;  // tracking_dirty not 0/1
  EXPECT_EQ(DecodeReplicaInfo(bad, &out).code(), StatusCode::kInvalidArgument);
  bad[kReplicaInfoLegacySize + 2] = 0;  // not tracking, yet a dirty_since_generation
  EXPECT_EQ(DecodeReplicaInfo(bad, &out).code(), StatusCode::kInvalidArgument);
  in.tracking_dirty = false;
  EXPECT_EQ(EncodeReplicaInfo(in, &payload).code(), StatusCode::kInvalidArgument);
}

TEST(FrameCodecTest, ReplicaInfoGenerationIdsRoundTrip) {
  ReplicaInfo in;
  in.size = 1ull << 30;
  in.block_size = 4096;
  in.generation = 9;
  in.replica_id = "r3";
  in.rebuild_cursor = 4096;
  in.rebuild_generation = 8;
  in.generation_id = 0x1111222233334444ull;
  in.generation_history = {0xAAAAull, 0xBBBBull, 0xCCCCull};
  in.clean_shutdown = true;
  in.activity_extent_size = 4u << 20;
  in.activity_count = 17;
  std::string payload;
  ASSERT_TRUE(EncodeReplicaInfo(in, &payload).ok());
  const size_t rebuild_end = kReplicaInfoLegacySize + 2 + kReplicaInfoRebuildFieldsSize;
  ASSERT_EQ(payload.size(), rebuild_end + kReplicaInfoGenerationFieldsSize + 3 * 8);
  // Layout: id, count, ids, clean, extent size, count.
  EXPECT_EQ(DecodeFixed64(reinterpret_cast<const uint8_t*>(payload.data()) + rebuild_end),
            in.generation_id);
  EXPECT_EQ(static_cast<uint8_t>(payload[rebuild_end + 8]), 3);
  EXPECT_EQ(DecodeFixed64(reinterpret_cast<const uint8_t*>(payload.data()) + rebuild_end + 9),
            0xAAAAull);
  EXPECT_EQ(static_cast<uint8_t>(payload[rebuild_end + 33]), 1);
  ReplicaInfo out;
  ASSERT_TRUE(DecodeReplicaInfo(payload, &out).ok());
  EXPECT_EQ(out.generation_id, in.generation_id);
  EXPECT_EQ(out.generation_history, in.generation_history);
  EXPECT_TRUE(out.clean_shutdown);
  EXPECT_EQ(out.activity_extent_size, 4u << 20);
  EXPECT_EQ(out.activity_count, 17u);
  EXPECT_EQ(out.rebuild_cursor, 4096u);

  // A replica from before generation ids: its reply ends after the rebuild
  // fields and decodes with no id, no history, not clean, no activity log.
  ReplicaInfo older;
  ASSERT_TRUE(DecodeReplicaInfo(payload.substr(0, rebuild_end), &older).ok());
  EXPECT_EQ(older.rebuild_cursor, 4096u);
  EXPECT_EQ(older.generation_id, 0u);
  EXPECT_TRUE(older.generation_history.empty());
  EXPECT_FALSE(older.clean_shutdown);
  EXPECT_EQ(older.activity_extent_size, 0u);

  // Refused both ways: a history of 9, a zero id in it, a history without an
  // id, a clean_shutdown byte of 2, an activity count without a log, an
  // extent size that is not a power of two.
  ReplicaInfo bad = in;
  bad.generation_history.assign(kMaxGenerationHistory + 1, 5);
  EXPECT_EQ(EncodeReplicaInfo(bad, &payload).code(), StatusCode::kInvalidArgument);
  bad = in;
  bad.generation_history[1] = 0;
  EXPECT_EQ(EncodeReplicaInfo(bad, &payload).code(), StatusCode::kInvalidArgument);
  bad = in;
  bad.generation_id = 0;
  EXPECT_EQ(EncodeReplicaInfo(bad, &payload).code(), StatusCode::kInvalidArgument);
  bad = in;
  bad.activity_extent_size = 0;
  EXPECT_EQ(EncodeReplicaInfo(bad, &payload).code(), StatusCode::kInvalidArgument);
  bad = in;
  bad.activity_extent_size = 3000;
  EXPECT_EQ(EncodeReplicaInfo(bad, &payload).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(EncodeReplicaInfo(in, &payload).ok());
  std::string raw = payload;
  raw[rebuild_end + 8] = 9;  // history_count over the limit
  EXPECT_EQ(DecodeReplicaInfo(raw, &out).code(), StatusCode::kInvalidArgument);
  raw = payload;
  std::memset(raw.data() + rebuild_end + 17, 0, 8);  // second history id 0
  EXPECT_EQ(DecodeReplicaInfo(raw, &out).code(), StatusCode::kInvalidArgument);
  raw = payload;
  raw[rebuild_end + 33] = 2;  // clean_shutdown not 0/1
  EXPECT_EQ(DecodeReplicaInfo(raw, &out).code(), StatusCode::kInvalidArgument);
  raw = payload;
  std::memset(raw.data() + rebuild_end, 0, 8);  // a history without an id
  EXPECT_EQ(DecodeReplicaInfo(raw, &out).code(), StatusCode::kInvalidArgument);
}

TEST(FrameCodecTest, GenerationRecordRoundTripAndRules) {
  GenerationRecord in;
  in.id = 0x0102030405060708ull;
  in.history = {11, 12};
  std::string payload;
  ASSERT_TRUE(EncodeGenerationRecord(in, &payload).ok());
  ASSERT_EQ(payload.size(), 8u + 1 + 16);
  EXPECT_EQ(payload.substr(0, 9), std::string("\x08\x07\x06\x05\x04\x03\x02\x01\x02", 9));
  GenerationRecord out;
  ASSERT_TRUE(DecodeGenerationRecord(payload, &out).ok());
  EXPECT_EQ(out.id, in.id);
  EXPECT_EQ(out.history, in.history);

  // The largest record fits kMaxGenerationRecordSize; an empty history is 9 bytes.
  in.history.assign(kMaxGenerationHistory, 7);
  ASSERT_TRUE(EncodeGenerationRecord(in, &payload).ok());
  EXPECT_EQ(payload.size(), kMaxGenerationRecordSize);
  ASSERT_TRUE(DecodeGenerationRecord(payload, &out).ok());
  EXPECT_EQ(out.history.size(), kMaxGenerationHistory);
  in.history.clear();
  ASSERT_TRUE(EncodeGenerationRecord(in, &payload).ok());
  EXPECT_EQ(payload.size(), 9u);

  // Every truncation, trailing bytes, id 0, too long a history, a zero
  // history id: refused.
  in.history = {11, 12};
  ASSERT_TRUE(EncodeGenerationRecord(in, &payload).ok());
  for (size_t n = 0; n < payload.size(); ++n) {
    EXPECT_EQ(DecodeGenerationRecord(std::string_view(payload).substr(0, n), &out).code(),
              StatusCode::kInvalidArgument)
        << n;
  }
  EXPECT_EQ(DecodeGenerationRecord(payload + "x", &out).code(), StatusCode::kInvalidArgument);
  std::string raw = payload;
  std::memset(raw.data(), 0, 8);
  EXPECT_EQ(DecodeGenerationRecord(raw, &out).code(), StatusCode::kInvalidArgument);
  raw = payload;
  raw[8] = 9;
  raw.append(7 * 8, '\x01');
  EXPECT_EQ(DecodeGenerationRecord(raw, &out).code(), StatusCode::kInvalidArgument);
  raw = payload;
  std::memset(raw.data() + 17, 0, 8);
  EXPECT_EQ(DecodeGenerationRecord(raw, &out).code(), StatusCode::kInvalidArgument);
  GenerationRecord bad;
  EXPECT_EQ(EncodeGenerationRecord(bad, &payload).code(), StatusCode::kInvalidArgument);
  bad.id = 1;
  bad.history = {3, 0};
  EXPECT_EQ(EncodeGenerationRecord(bad, &payload).code(), StatusCode::kInvalidArgument);
  bad.history.assign(kMaxGenerationHistory + 1, 3);
  EXPECT_EQ(EncodeGenerationRecord(bad, &payload).code(), StatusCode::kInvalidArgument);
}

TEST(FrameCodecTest, AllocationListRoundTripAndRules) {
  const AllocationExtent extents[] = {{0, 4096}, {65536, 8192}, {1 << 20, 1 << 20}};
  std::string payload;
  ASSERT_TRUE(EncodeAllocation(4 << 20, extents, 3, &payload).ok());
  ASSERT_EQ(payload.size(), kAllocationPrefixSize + 3 * kAllocationExtentSize);
  AllocationList list;
  ASSERT_TRUE(DecodeAllocation(payload, &list).ok());
  EXPECT_EQ(list.covered_end, 4u << 20);
  ASSERT_EQ(list.count, 3u);
  for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(list.extent(i), extents[i]) << i;
  EXPECT_EQ(list.extents.data(), payload.data() + kAllocationPrefixSize);  // a view
  EXPECT_TRUE(CheckAllocationAnswers(list, 0, 4 << 20).ok());
  EXPECT_FALSE(CheckAllocationAnswers(list, 0, 2 << 20).ok());     // covered_end past the range
  EXPECT_FALSE(CheckAllocationAnswers(list, 4096, 8 << 20).ok());  // extent before offset
  AllocationList stuck;
  stuck.covered_end = 4096;
  EXPECT_FALSE(CheckAllocationAnswers(stuck, 4096, 8192).ok());  // no progress

  // No extents: the whole covered range is a hole.
  ASSERT_TRUE(EncodeAllocation(8192, nullptr, 0, &payload).ok());
  ASSERT_TRUE(DecodeAllocation(payload, &list).ok());
  EXPECT_EQ(list.count, 0u);
  EXPECT_EQ(list.covered_end, 8192u);

  // Encoder and decoder refuse the same lists.
  const AllocationExtent overlapping[] = {{0, 8192}, {4096, 4096}};
  const AllocationExtent unordered[] = {{8192, 4096}, {0, 4096}};
  const AllocationExtent empty[] = {{4096, 0}};
  const AllocationExtent overflowing[] = {{UINT64_MAX - 100, 4096}};
  EXPECT_EQ(EncodeAllocation(1 << 20, overlapping, 2, &payload).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeAllocation(1 << 20, unordered, 2, &payload).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeAllocation(1 << 20, empty, 1, &payload).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeAllocation(UINT64_MAX, overflowing, 1, &payload).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeAllocation(4096, extents, 2, &payload).code(),
            StatusCode::kInvalidArgument);  // ends past covered_end
  std::vector<AllocationExtent> many(kMaxAllocationExtents + 1);
  for (size_t i = 0; i < many.size(); ++i) many[i] = {i * 8192, 4096};
  EXPECT_EQ(EncodeAllocation(UINT64_MAX, many.data(), kMaxAllocationExtents + 1, &payload).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(EncodeAllocation(UINT64_MAX, many.data(), kMaxAllocationExtents, &payload).ok());
  EXPECT_EQ(payload.size(), kMaxAllocationReply);
  ASSERT_TRUE(DecodeAllocation(payload, &list).ok());
  for (size_t n = 0; n < payload.size(); n += 7) {  // truncated
    EXPECT_EQ(DecodeAllocation(std::string_view(payload).substr(0, n), &list).code(),
              StatusCode::kInvalidArgument)
        << n;
  }
  EXPECT_EQ(DecodeAllocation(payload + "x", &list).code(), StatusCode::kInvalidArgument);
  // A corrupt count cannot make the decoder read past the payload.
  std::string lying = payload;
  EncodeFixed32(reinterpret_cast<uint8_t*>(lying.data()) + 8, kMaxAllocationExtents + 1);
  EXPECT_EQ(DecodeAllocation(lying, &list).code(), StatusCode::kInvalidArgument);
}

TEST(FrameCodecTest, AllocationReplyMayExceedTheControlLimitButNoMore) {
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kGetAllocation) | kReplyBit;
  h.payload_length = kMaxAllocationReply;
  uint8_t buf[kHeaderSize];
  EncodeHeader(h, buf);
  FrameHeader out;
  EXPECT_EQ(DecodeHeader(buf, &out), DecodeResult::kOk);
  h.payload_length = kMaxAllocationReply + 1;
  EncodeHeader(h, buf);
  EXPECT_EQ(DecodeHeader(buf, &out), DecodeResult::kOversized);
  // The request side stays a control frame.
  h.opcode = static_cast<uint8_t>(Opcode::kGetAllocation);
  h.payload_length = kMaxControlPayload + 1;
  EncodeHeader(h, buf);
  EXPECT_EQ(DecodeHeader(buf, &out), DecodeResult::kOversized);
}

TEST(FrameCodecTest, RebuildCursorPayload) {
  uint8_t buf[kRebuildCursorSize];
  EncodeRebuildCursor(RebuildCursor{0x0102030405060708ull, 42}, buf);
  EXPECT_EQ(buf[0], 0x08);  // little-endian
  RebuildCursor c;
  std::string_view p(reinterpret_cast<const char*>(buf), sizeof(buf));
  ASSERT_TRUE(DecodeRebuildCursor(p, &c).ok());
  EXPECT_EQ(c.cursor, 0x0102030405060708ull);
  EXPECT_EQ(c.generation, 42u);
  EXPECT_EQ(DecodeRebuildCursor(p.substr(0, 15), &c).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeRebuildCursor(std::string(17, '\0'), &c).code(), StatusCode::kInvalidArgument);
  EXPECT_STREQ(OpcodeName(static_cast<uint8_t>(Opcode::kSetRebuildCursor)), "SET_REBUILD_CURSOR");
  EXPECT_STREQ(OpcodeName(static_cast<uint8_t>(Opcode::kGetAllocation) | kReplyBit),
               "GET_ALLOCATION");
}

TEST(FrameCodecTest, StringLimitsOnEncodeAndDecode) {
  HelloRequest hello;
  hello.volume_id = std::string(kMaxVolumeIdLength, 'v');
  hello.token = std::string(kMaxTokenLength, 't');
  std::string payload;
  ASSERT_TRUE(EncodeHello(hello, &payload).ok());

  hello.volume_id.push_back('v');
  Status st = EncodeHello(hello, &payload);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("volume_id"), std::string::npos);
  hello.volume_id.pop_back();
  hello.token.push_back('t');
  st = EncodeHello(hello, &payload);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token"), std::string::npos);

  ReplicaInfo info;
  info.replica_id = std::string(kMaxVolumeIdLength + 1, 'r');
  EXPECT_EQ(EncodeReplicaInfo(info, &payload).code(), StatusCode::kInvalidArgument);

  // A hand-built payload whose volume id is one byte over the limit: the
  // decoder rejects it by its length prefix.
  std::string raw(8, '\0');
  uint8_t len[2];
  EncodeFixed16(len, kMaxVolumeIdLength + 1);
  raw.append(reinterpret_cast<const char*>(len), 2);
  raw.append(kMaxVolumeIdLength + 1, 'v');
  raw.append(2, '\0');
  HelloRequest out;
  st = DecodeHello(raw, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("volume_id"), std::string::npos);
  EXPECT_NE(st.message().find("exceeds"), std::string::npos);
}

}  // namespace
}  // namespace tandem::protocol

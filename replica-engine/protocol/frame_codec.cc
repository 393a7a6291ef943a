#include "replica-engine/protocol/frame_codec.h"

#include <string>
#include <utility>
#include <vector>

#include "common/byte_reader.h"
#include "common/coding.h"
#include "common/crc32c.h"

namespace tandem::protocol {
namespace {

// Field offsets of the header; the table in wire_format.h is the reference.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffOpcode = 5;
constexpr size_t kOffFlags = 6;
constexpr size_t kOffRequestId = 8;
constexpr size_t kOffOffset = 16;
constexpr size_t kOffLength = 24;
constexpr size_t kOffPayloadLength = 28;
constexpr size_t kOffStatus = 32;
constexpr size_t kOffReserved = 36;
constexpr size_t kOffPayloadCrc = 40;
constexpr size_t kOffHeaderCrc = 44;
static_assert(kOffHeaderCrc + 4 == kHeaderSize);

// Largest payload a header with this opcode may announce. Only the two frames
// that carry block data are allowed kMaxPayload; every other frame (including
// unknown opcodes) is bounded by kMaxControlPayload, so a corrupt or hostile
// header cannot make the receiver buffer a megabyte for a control message.
uint32_t PayloadLimit(uint8_t opcode) {
  const bool reply = (opcode & kReplyBit) != 0;
  const auto op = static_cast<Opcode>(opcode & ~kReplyBit);
  if ((!reply && op == Opcode::kWrite) || (reply && op == Opcode::kRead)) return kMaxPayload;
  if (reply && op == Opcode::kGetDirtyMap) return kMaxPayload;
  if (reply && op == Opcode::kGetAllocation) return kMaxAllocationReply;
  return kMaxControlPayload;
}

Status CheckLimit(const char* field, size_t size, size_t limit) {
  if (size <= limit) return Status::Ok();
  return Status::InvalidArgument(std::string(field) + " length " + std::to_string(size) +
                                 " exceeds " + std::to_string(limit));
}

// The checks EncodeDirtyMap and DecodeDirtyMap share, so whatever decodes
// re-encodes (the fuzzer relies on it).
Status ValidateDirtyMap(const DirtyMapChunk& c) {
  if (c.region_size < 512 || (c.region_size & (c.region_size - 1)) != 0) {
    return Status::InvalidArgument("dirty map: region_size " + std::to_string(c.region_size) +
                                   " is not a power of two >= 512");
  }
  if (c.volume_size == 0) return Status::InvalidArgument("dirty map: volume_size is 0");
  if (c.bitmap.empty()) return Status::InvalidArgument("dirty map: empty bitmap");
  if (c.bitmap.size() > kMaxDirtyMapChunk ||
      c.bitmap.size() > DirtyMapBytes(c.volume_size, c.region_size)) {
    return Status::InvalidArgument("dirty map: bitmap of " + std::to_string(c.bitmap.size()) +
                                   " bytes is longer than the map or the frame allows");
  }
  return Status::Ok();
}

// The rules EncodeAllocation and DecodeAllocation share (canonical: whatever
// decodes re-encodes to the same bytes).
// `at(i)` returns extent i.
template <typename At>
Status ValidateAllocation(uint64_t covered_end, uint32_t count, At at) {
  if (count > kMaxAllocationExtents) {
    return Status::InvalidArgument("allocation: " + std::to_string(count) + " extents exceed " +
                                   std::to_string(kMaxAllocationExtents));
  }
  uint64_t prev_end = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const AllocationExtent e = at(i);
    if (e.length == 0 || e.offset + e.length < e.offset) {
      return Status::InvalidArgument("allocation: extent " + std::to_string(i) +
                                     " is empty or overflows");
    }
    if (i > 0 && e.offset < prev_end) {
      return Status::InvalidArgument("allocation: extent " + std::to_string(i) +
                                     " overlaps or precedes the previous one");
    }
    prev_end = e.offset + e.length;
    if (prev_end > covered_end) {
      return Status::InvalidArgument("allocation: extent " + std::to_string(i) +
                                     " ends past covered_end");
    }
  }
  return Status::Ok();
}

// A generation id and its history (ReplicaInfo, GenerationRecord).
Status ValidateGenerationIds(const char* what, uint64_t id, const std::vector<uint64_t>& history) {
  if (history.size() > kMaxGenerationHistory) {
    return Status::InvalidArgument(std::string(what) + ": " + std::to_string(history.size()) +
                                   " history ids exceed " + std::to_string(kMaxGenerationHistory));
  }
  if (id == 0 && !history.empty()) {
    return Status::InvalidArgument(std::string(what) + ": a history without a generation id");
  }
  for (uint64_t h : history) {
    if (h == 0) return Status::InvalidArgument(std::string(what) + ": a history id is 0");
  }
  return Status::Ok();
}

// The ReplicaInfo rules Encode and Decode share.
Status ValidateReplicaInfo(const ReplicaInfo& info) {
  if (!info.tracking_dirty && info.dirty_since_generation != 0) {
    return Status::InvalidArgument("replica info: dirty_since_generation set without tracking");
  }
  TANDEM_RETURN_IF_ERROR(
      ValidateGenerationIds("replica info", info.generation_id, info.generation_history));
  const uint32_t a = info.activity_extent_size;
  if (a != 0 && (a < 512 || (a & (a - 1)) != 0)) {
    return Status::InvalidArgument("replica info: activity_extent_size " + std::to_string(a) +
                                   " is not 0 or a power of two >= 512");
  }
  if (a == 0 && info.activity_count != 0) {
    return Status::InvalidArgument("replica info: activity_count without an activity log");
  }
  return Status::Ok();
}

AllocationExtent ExtentAt(const char* p) {
  const auto* b = reinterpret_cast<const uint8_t*>(p);
  return AllocationExtent{DecodeFixed64(b), DecodeFixed64(b + 8)};
}

}  // namespace

uint64_t DirtyMapBytes(uint64_t volume_size, uint32_t region_size) {
  if (region_size == 0) return 0;
  // Written to not overflow for sizes near 2^64.
  uint64_t regions = volume_size / region_size + (volume_size % region_size != 0 ? 1 : 0);
  return regions / 8 + (regions % 8 != 0 ? 1 : 0);
}

void EncodeHeader(const FrameHeader& h, uint8_t* out) {
  EncodeFixed32(out + kOffMagic, kFrameMagic);
  out[kOffVersion] = kProtocolVersion;
  out[kOffOpcode] = h.opcode;
  EncodeFixed16(out + kOffFlags, h.flags);
  EncodeFixed64(out + kOffRequestId, h.request_id);
  EncodeFixed64(out + kOffOffset, h.offset);
  EncodeFixed32(out + kOffLength, h.length);
  EncodeFixed32(out + kOffPayloadLength, h.payload_length);
  EncodeFixed32(out + kOffStatus, static_cast<uint32_t>(h.status));
  EncodeFixed32(out + kOffReserved, 0);
  EncodeFixed32(out + kOffPayloadCrc, h.payload_crc);
  EncodeFixed32(out + kOffHeaderCrc, Crc32c(out, kOffHeaderCrc));
}

const char* DecodeResultName(DecodeResult r) {
  switch (r) {
    case DecodeResult::kOk:
      return "ok";
    case DecodeResult::kBadMagic:
      return "bad frame magic";
    case DecodeResult::kBadVersion:
      return "unsupported protocol version";
    case DecodeResult::kBadHeaderCrc:
      return "header crc mismatch";
    case DecodeResult::kOversized:
      return "payload length over limit";
    case DecodeResult::kBadFlags:
      return "unknown flag bits";
  }
  return "unknown decode result";
}

DecodeResult DecodeHeader(const uint8_t* in, FrameHeader* h) {
  // Magic and version come before the crc so that a peer speaking another
  // protocol (or another version with a different layout) is reported as
  // such, not as corruption.
  if (DecodeFixed32(in + kOffMagic) != kFrameMagic) return DecodeResult::kBadMagic;
  if (in[kOffVersion] != kProtocolVersion) return DecodeResult::kBadVersion;
  if (DecodeFixed32(in + kOffHeaderCrc) != Crc32c(in, kOffHeaderCrc)) {
    return DecodeResult::kBadHeaderCrc;
  }
  FrameHeader d;
  d.opcode = in[kOffOpcode];
  d.flags = DecodeFixed16(in + kOffFlags);
  d.request_id = DecodeFixed64(in + kOffRequestId);
  d.offset = DecodeFixed64(in + kOffOffset);
  d.length = DecodeFixed32(in + kOffLength);
  d.payload_length = DecodeFixed32(in + kOffPayloadLength);
  d.status = static_cast<WireStatus>(static_cast<int32_t>(DecodeFixed32(in + kOffStatus)));
  d.payload_crc = DecodeFixed32(in + kOffPayloadCrc);
  // The reserved word is covered by the crc but otherwise ignored, so a later
  // version can give it a meaning that old receivers safely disregard.
  if ((d.flags & ~kKnownFlags) != 0) return DecodeResult::kBadFlags;
  if (d.payload_length > PayloadLimit(d.opcode)) return DecodeResult::kOversized;
  *h = d;
  return DecodeResult::kOk;
}

bool CheckPayload(const FrameHeader& h, const void* payload) {
  return Crc32c(payload, h.payload_length) == h.payload_crc;
}

Status EncodeHello(const HelloRequest& hello, std::string* out) {
  out->clear();
  TANDEM_RETURN_IF_ERROR(CheckLimit("hello volume_id", hello.volume_id.size(), kMaxVolumeIdLength));
  TANDEM_RETURN_IF_ERROR(CheckLimit("hello token", hello.token.size(), kMaxTokenLength));
  out->reserve(8 + 2 + hello.volume_id.size() + 2 + hello.token.size() + 8);
  ByteWriter w(out);
  w.U64(hello.epoch);
  w.String16(hello.volume_id);
  w.String16(hello.token);
  w.U64(hello.target_id);
  if (!hello.proof.empty()) {
    if (hello.proof.size() != kProofSize) {
      out->clear();
      return Status::InvalidArgument("hello proof must be " + std::to_string(kProofSize) +
                                     " bytes");
    }
    out->append(hello.proof);
  }
  return Status::Ok();
}

Status EncodeReplicaInfo(const ReplicaInfo& info, std::string* out) {
  out->clear();
  TANDEM_RETURN_IF_ERROR(
      CheckLimit("replica info replica_id", info.replica_id.size(), kMaxVolumeIdLength));
  TANDEM_RETURN_IF_ERROR(ValidateReplicaInfo(info));
  out->reserve(kReplicaInfoLegacySize + info.replica_id.size() + kReplicaInfoRebuildFieldsSize +
               kReplicaInfoGenerationFieldsSize + 8 * info.generation_history.size());
  ByteWriter w(out);
  w.U64(info.size);
  w.U32(info.block_size);
  w.U32(info.max_inflight);
  w.U64(info.generation);
  w.U64(info.highest_epoch);
  w.String16(info.replica_id);
  w.U8(info.tracking_dirty ? 1 : 0);
  w.U64(info.dirty_since_generation);
  w.U64(info.rebuild_cursor);
  w.U64(info.rebuild_generation);
  w.U64(info.generation_id);
  w.U8(static_cast<uint8_t>(info.generation_history.size()));
  for (uint64_t id : info.generation_history) w.U64(id);
  w.U8(info.clean_shutdown ? 1 : 0);
  w.U32(info.activity_extent_size);
  w.U32(info.activity_count);
  return Status::Ok();
}

// Decoding fills a local and assigns it on success, so a caller never sees a
// half-decoded struct.
Status DecodeHello(std::string_view payload, HelloRequest* hello) {
  ByteReader r(payload, "hello");
  HelloRequest d;
  TANDEM_RETURN_IF_ERROR(r.U64("epoch", &d.epoch));
  TANDEM_RETURN_IF_ERROR(r.String16("volume_id", kMaxVolumeIdLength, &d.volume_id));
  TANDEM_RETURN_IF_ERROR(r.String16("token", kMaxTokenLength, &d.token));
  // An older target stops here: target_id 0.
  if (r.remaining() != 0) TANDEM_RETURN_IF_ERROR(r.U64("target_id", &d.target_id));
  // A proof follows only for a volume with a secret: exactly kProofSize bytes.
  if (r.remaining() == kProofSize) {
    std::string_view proof;
    TANDEM_RETURN_IF_ERROR(r.Bytes("proof", kProofSize, &proof));
    d.proof.assign(proof);
  }
  TANDEM_RETURN_IF_ERROR(r.Finish());
  *hello = std::move(d);
  return Status::Ok();
}

Status DecodeReplicaInfo(std::string_view payload, ReplicaInfo* info) {
  ByteReader r(payload, "replica info");
  ReplicaInfo d;
  TANDEM_RETURN_IF_ERROR(r.U64("size", &d.size));
  TANDEM_RETURN_IF_ERROR(r.U32("block_size", &d.block_size));
  TANDEM_RETURN_IF_ERROR(r.U32("max_inflight", &d.max_inflight));
  TANDEM_RETURN_IF_ERROR(r.U64("generation", &d.generation));
  TANDEM_RETURN_IF_ERROR(r.U64("highest_epoch", &d.highest_epoch));
  TANDEM_RETURN_IF_ERROR(r.String16("replica_id", kMaxVolumeIdLength, &d.replica_id));
  // An older replica stops here; its rebuild fields read as "none".
  if (r.remaining() != 0) {
    uint8_t tracking = 0;
    TANDEM_RETURN_IF_ERROR(r.U8("tracking_dirty", &tracking));
    if (tracking > 1) return Status::InvalidArgument("replica info: bad tracking_dirty value");
    d.tracking_dirty = tracking != 0;
    TANDEM_RETURN_IF_ERROR(r.U64("dirty_since_generation", &d.dirty_since_generation));
    TANDEM_RETURN_IF_ERROR(r.U64("rebuild_cursor", &d.rebuild_cursor));
    TANDEM_RETURN_IF_ERROR(r.U64("rebuild_generation", &d.rebuild_generation));
  }
  // A replica from before generation ids stops here: none, no activity log.
  if (r.remaining() != 0) {
    TANDEM_RETURN_IF_ERROR(r.U64("generation_id", &d.generation_id));
    uint8_t count = 0;
    TANDEM_RETURN_IF_ERROR(r.U8("history_count", &count));
    if (count > kMaxGenerationHistory) {
      return Status::InvalidArgument("replica info: history_count " + std::to_string(count) +
                                     " exceeds " + std::to_string(kMaxGenerationHistory));
    }
    d.generation_history.resize(count);
    for (uint8_t i = 0; i < count; ++i) {
      TANDEM_RETURN_IF_ERROR(r.U64("generation_history", &d.generation_history[i]));
    }
    uint8_t clean = 0;
    TANDEM_RETURN_IF_ERROR(r.U8("clean_shutdown", &clean));
    if (clean > 1) return Status::InvalidArgument("replica info: bad clean_shutdown value");
    d.clean_shutdown = clean != 0;
    TANDEM_RETURN_IF_ERROR(r.U32("activity_extent_size", &d.activity_extent_size));
    TANDEM_RETURN_IF_ERROR(r.U32("activity_count", &d.activity_count));
  }
  TANDEM_RETURN_IF_ERROR(r.Finish());
  TANDEM_RETURN_IF_ERROR(ValidateReplicaInfo(d));
  *info = std::move(d);
  return Status::Ok();
}

Status EncodeDirtyMap(const DirtyMapChunk& chunk, std::string* out) {
  out->clear();
  TANDEM_RETURN_IF_ERROR(ValidateDirtyMap(chunk));
  out->reserve(kDirtyMapPrefixSize + chunk.bitmap.size());
  ByteWriter w(out);
  w.U32(chunk.region_size);
  w.U64(chunk.volume_size);
  out->append(chunk.bitmap);
  return Status::Ok();
}

Status DecodeDirtyMap(std::string_view payload, DirtyMapChunk* chunk) {
  ByteReader r(payload, "dirty map");
  DirtyMapChunk d;
  TANDEM_RETURN_IF_ERROR(r.U32("region_size", &d.region_size));
  TANDEM_RETURN_IF_ERROR(r.U64("volume_size", &d.volume_size));
  // The bitmap is the rest of the payload; Validate bounds its length.
  d.bitmap = payload.substr(kDirtyMapPrefixSize);
  TANDEM_RETURN_IF_ERROR(ValidateDirtyMap(d));
  *chunk = d;
  return Status::Ok();
}

AllocationExtent AllocationList::extent(uint32_t i) const {
  return ExtentAt(extents.data() + size_t{i} * kAllocationExtentSize);
}

Status EncodeAllocation(uint64_t covered_end, const AllocationExtent* extents, uint32_t count,
                        std::string* out) {
  out->clear();
  TANDEM_RETURN_IF_ERROR(
      ValidateAllocation(covered_end, count, [extents](uint32_t i) { return extents[i]; }));
  out->reserve(kAllocationPrefixSize + size_t{count} * kAllocationExtentSize);
  ByteWriter w(out);
  w.U64(covered_end);
  w.U32(count);
  for (uint32_t i = 0; i < count; ++i) {
    w.U64(extents[i].offset);
    w.U64(extents[i].length);
  }
  return Status::Ok();
}

Status DecodeAllocation(std::string_view payload, AllocationList* list) {
  ByteReader r(payload, "allocation");
  AllocationList d;
  TANDEM_RETURN_IF_ERROR(r.U64("covered_end", &d.covered_end));
  TANDEM_RETURN_IF_ERROR(r.U32("count", &d.count));
  if (d.count > kMaxAllocationExtents) {
    return Status::InvalidArgument("allocation: " + std::to_string(d.count) + " extents exceed " +
                                   std::to_string(kMaxAllocationExtents));
  }
  const size_t want = size_t{d.count} * kAllocationExtentSize;
  if (r.remaining() < want) return Status::InvalidArgument("allocation: truncated at extents");
  if (r.remaining() > want) {
    return Status::InvalidArgument("allocation: " + std::to_string(r.remaining() - want) +
                                   " trailing bytes");
  }
  d.extents = payload.substr(kAllocationPrefixSize, want);
  // Validated from the view: no copy, no allocation.
  TANDEM_RETURN_IF_ERROR(
      ValidateAllocation(d.covered_end, d.count, [&d](uint32_t i) { return d.extent(i); }));
  *list = d;
  return Status::Ok();
}

Status CheckAllocationAnswers(const AllocationList& list, uint64_t offset, uint32_t length) {
  if (list.covered_end <= offset || list.covered_end - offset > length) {
    return Status::InvalidArgument("allocation: covered_end " + std::to_string(list.covered_end) +
                                   " outside the requested range " + std::to_string(offset) + "+" +
                                   std::to_string(length));
  }
  if (list.count > 0 && list.extent(0).offset < offset) {
    return Status::InvalidArgument("allocation: extent before the requested offset");
  }
  return Status::Ok();
}

void EncodeRebuildCursor(const RebuildCursor& c, uint8_t* out) {
  EncodeFixed64(out, c.cursor);
  EncodeFixed64(out + 8, c.generation);
}

Status DecodeRebuildCursor(std::string_view payload, RebuildCursor* c) {
  if (payload.size() != kRebuildCursorSize) {
    return Status::InvalidArgument("rebuild cursor: payload of " + std::to_string(payload.size()) +
                                   " bytes, expected " + std::to_string(kRebuildCursorSize));
  }
  const auto* p = reinterpret_cast<const uint8_t*>(payload.data());
  c->cursor = DecodeFixed64(p);
  c->generation = DecodeFixed64(p + 8);
  return Status::Ok();
}

Status EncodeGenerationRecord(const GenerationRecord& record, std::string* out) {
  out->clear();
  if (record.id == 0) return Status::InvalidArgument("generation record: id is 0");
  TANDEM_RETURN_IF_ERROR(ValidateGenerationIds("generation record", record.id, record.history));
  out->reserve(9 + 8 * record.history.size());
  ByteWriter w(out);
  w.U64(record.id);
  w.U8(static_cast<uint8_t>(record.history.size()));
  for (uint64_t id : record.history) w.U64(id);
  return Status::Ok();
}

Status DecodeGenerationRecord(std::string_view payload, GenerationRecord* record) {
  ByteReader r(payload, "generation record");
  GenerationRecord d;
  TANDEM_RETURN_IF_ERROR(r.U64("id", &d.id));
  if (d.id == 0) return Status::InvalidArgument("generation record: id is 0");
  uint8_t count = 0;
  TANDEM_RETURN_IF_ERROR(r.U8("history_count", &count));
  if (count > kMaxGenerationHistory) {
    return Status::InvalidArgument("generation record: history_count " + std::to_string(count) +
                                   " exceeds " + std::to_string(kMaxGenerationHistory));
  }
  d.history.resize(count);
  for (uint8_t i = 0; i < count; ++i) TANDEM_RETURN_IF_ERROR(r.U64("history", &d.history[i]));
  TANDEM_RETURN_IF_ERROR(r.Finish());
  TANDEM_RETURN_IF_ERROR(ValidateGenerationIds("generation record", d.id, d.history));
  *record = std::move(d);
  return Status::Ok();
}

}  // namespace tandem::protocol

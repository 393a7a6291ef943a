#include "replica-engine/protocol/frame_codec.h"

#include <string>
#include <utility>
#include <vector>

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

// Sequential little-endian reader over a payload. Every read checks the
// remaining length first, so a short payload is reported, never overrun.
class Reader {
 public:
  Reader(std::string_view data, const char* what) : data_(data), what_(what) {}

  Status U8(const char* field, uint8_t* v) { return Fixed(field, 1, v); }
  Status U16(const char* field, uint16_t* v) { return Fixed(field, 2, v); }
  Status U32(const char* field, uint32_t* v) { return Fixed(field, 4, v); }
  Status U64(const char* field, uint64_t* v) { return Fixed(field, 8, v); }

  // A u16 length prefix followed by that many bytes, at most `limit`.
  Status String(const char* field, size_t limit, std::string* out) {
    uint16_t len = 0;
    TANDEM_RETURN_IF_ERROR(U16(field, &len));
    if (len > limit) {
      return Status::InvalidArgument(std::string(what_) + ": " + field + " length " +
                                     std::to_string(len) + " exceeds " + std::to_string(limit));
    }
    if (data_.size() - pos_ < len) return Truncated(field);
    out->assign(data_.data() + pos_, len);
    pos_ += len;
    return Status::Ok();
  }

  size_t remaining() const { return data_.size() - pos_; }
  // `n` raw bytes. REQUIRES: n <= remaining().
  void Bytes(size_t n, std::string* out) {
    out->assign(data_.data() + pos_, n);
    pos_ += n;
  }

  Status Finish() const {
    if (pos_ == data_.size()) return Status::Ok();
    return Status::InvalidArgument(std::string(what_) + ": " + std::to_string(data_.size() - pos_) +
                                   " trailing bytes");
  }

 private:
  template <typename T>
  Status Fixed(const char* field, size_t n, T* v) {
    if (data_.size() - pos_ < n) return Truncated(field);
    const auto* p = reinterpret_cast<const uint8_t*>(data_.data() + pos_);
    if constexpr (sizeof(T) == 1) {
      *v = *p;
    } else if constexpr (sizeof(T) == 2) {
      *v = DecodeFixed16(p);
    } else if constexpr (sizeof(T) == 4) {
      *v = DecodeFixed32(p);
    } else {
      *v = DecodeFixed64(p);
    }
    pos_ += n;
    return Status::Ok();
  }

  Status Truncated(const char* field) const {
    return Status::InvalidArgument(std::string(what_) + ": truncated at " + field);
  }

  std::string_view data_;
  const char* what_;
  size_t pos_ = 0;
};

void PutFixed8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
void PutFixed16(std::string* out, uint16_t v) {
  uint8_t b[2];
  EncodeFixed16(b, v);
  out->append(reinterpret_cast<const char*>(b), sizeof(b));
}
void PutFixed32(std::string* out, uint32_t v) {
  uint8_t b[4];
  EncodeFixed32(b, v);
  out->append(reinterpret_cast<const char*>(b), sizeof(b));
}
void PutFixed64(std::string* out, uint64_t v) {
  uint8_t b[8];
  EncodeFixed64(b, v);
  out->append(reinterpret_cast<const char*>(b), sizeof(b));
}
// REQUIRES: s.size() fits in u16 (callers check the field limit first).
void PutString(std::string* out, std::string_view s) {
  PutFixed16(out, static_cast<uint16_t>(s.size()));
  out->append(s);
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
  PutFixed64(out, hello.epoch);
  PutString(out, hello.volume_id);
  PutString(out, hello.token);
  PutFixed64(out, hello.target_id);
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
  PutFixed64(out, info.size);
  PutFixed32(out, info.block_size);
  PutFixed32(out, info.max_inflight);
  PutFixed64(out, info.generation);
  PutFixed64(out, info.highest_epoch);
  PutString(out, info.replica_id);
  PutFixed8(out, info.tracking_dirty ? 1 : 0);
  PutFixed64(out, info.dirty_since_generation);
  PutFixed64(out, info.rebuild_cursor);
  PutFixed64(out, info.rebuild_generation);
  PutFixed64(out, info.generation_id);
  PutFixed8(out, static_cast<uint8_t>(info.generation_history.size()));
  for (uint64_t id : info.generation_history) PutFixed64(out, id);
  PutFixed8(out, info.clean_shutdown ? 1 : 0);
  PutFixed32(out, info.activity_extent_size);
  PutFixed32(out, info.activity_count);
  return Status::Ok();
}

// Decoding fills a local and assigns it on success, so a caller never sees a
// half-decoded struct.
Status DecodeHello(std::string_view payload, HelloRequest* hello) {
  Reader r(payload, "hello");
  HelloRequest d;
  TANDEM_RETURN_IF_ERROR(r.U64("epoch", &d.epoch));
  TANDEM_RETURN_IF_ERROR(r.String("volume_id", kMaxVolumeIdLength, &d.volume_id));
  TANDEM_RETURN_IF_ERROR(r.String("token", kMaxTokenLength, &d.token));
  // An older target stops here: target_id 0.
  if (r.remaining() != 0) TANDEM_RETURN_IF_ERROR(r.U64("target_id", &d.target_id));
  // A proof follows only for a volume with a secret: exactly kProofSize bytes.
  if (r.remaining() == kProofSize) {
    r.Bytes(kProofSize, &d.proof);
  }
  TANDEM_RETURN_IF_ERROR(r.Finish());
  *hello = std::move(d);
  return Status::Ok();
}

Status DecodeReplicaInfo(std::string_view payload, ReplicaInfo* info) {
  Reader r(payload, "replica info");
  ReplicaInfo d;
  TANDEM_RETURN_IF_ERROR(r.U64("size", &d.size));
  TANDEM_RETURN_IF_ERROR(r.U32("block_size", &d.block_size));
  TANDEM_RETURN_IF_ERROR(r.U32("max_inflight", &d.max_inflight));
  TANDEM_RETURN_IF_ERROR(r.U64("generation", &d.generation));
  TANDEM_RETURN_IF_ERROR(r.U64("highest_epoch", &d.highest_epoch));
  TANDEM_RETURN_IF_ERROR(r.String("replica_id", kMaxVolumeIdLength, &d.replica_id));
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
  PutFixed32(out, chunk.region_size);
  PutFixed64(out, chunk.volume_size);
  out->append(chunk.bitmap);
  return Status::Ok();
}

Status DecodeDirtyMap(std::string_view payload, DirtyMapChunk* chunk) {
  Reader r(payload, "dirty map");
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
  PutFixed64(out, covered_end);
  PutFixed32(out, count);
  for (uint32_t i = 0; i < count; ++i) {
    PutFixed64(out, extents[i].offset);
    PutFixed64(out, extents[i].length);
  }
  return Status::Ok();
}

Status DecodeAllocation(std::string_view payload, AllocationList* list) {
  Reader r(payload, "allocation");
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
  PutFixed64(out, record.id);
  PutFixed8(out, static_cast<uint8_t>(record.history.size()));
  for (uint64_t id : record.history) PutFixed64(out, id);
  return Status::Ok();
}

Status DecodeGenerationRecord(std::string_view payload, GenerationRecord* record) {
  Reader r(payload, "generation record");
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

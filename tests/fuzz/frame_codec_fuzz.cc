// libFuzzer target for the data-protocol decoder: the code that parses bytes
// straight off the network before anything is authenticated.
//
// Input: a 48-byte header followed by payload bytes. Every header goes through
// DecodeHeader; an accepted one has its payload crc checked against the
// remaining bytes, and the payload is parsed as HELLO, ReplicaInfo, a
// GET_DIRTY_MAP chunk, a GET_ALLOCATION list, a SET_REBUILD_CURSOR payload
// and a SET_GENERATION GenerationRecord (a peer parses whichever its opcode
// says; here all are exercised on every input). A decoded message must
// re-encode to bytes that decode to the same value (the encodings are
// canonical, except that the shorter forms of older peers re-encode with the
// appended fields as zeroes: a HELLO without target_id, a ReplicaInfo without
// the rebuild or generation-id fields), and an accepted header must re-encode
// to the same 48 bytes.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "replica-engine/protocol/frame_codec.h"

namespace {

using tandem::protocol::AllocationExtent;
using tandem::protocol::AllocationList;
using tandem::protocol::DecodeAllocation;
using tandem::protocol::DecodeDirtyMap;
using tandem::protocol::DecodeGenerationRecord;
using tandem::protocol::DecodeHeader;
using tandem::protocol::DecodeHello;
using tandem::protocol::DecodeRebuildCursor;
using tandem::protocol::DecodeReplicaInfo;
using tandem::protocol::DecodeResult;
using tandem::protocol::DirtyMapChunk;
using tandem::protocol::EncodeAllocation;
using tandem::protocol::EncodeDirtyMap;
using tandem::protocol::EncodeGenerationRecord;
using tandem::protocol::EncodeHeader;
using tandem::protocol::EncodeHello;
using tandem::protocol::EncodeRebuildCursor;
using tandem::protocol::EncodeReplicaInfo;
using tandem::protocol::FrameHeader;
using tandem::protocol::GenerationRecord;
using tandem::protocol::HelloRequest;
using tandem::protocol::kHeaderSize;
using tandem::protocol::kMaxPayload;
using tandem::protocol::RebuildCursor;
using tandem::protocol::ReplicaInfo;

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

void FuzzHello(std::string_view payload) {
  HelloRequest hello;
  if (!DecodeHello(payload, &hello).ok()) return;
  std::string encoded;
  Check(EncodeHello(hello, &encoded).ok());
  // The encoding is canonical: whatever decoded must be exactly that
  // encoding, except an older target's HELLO, which gains a zero target_id.
  if (encoded.size() == payload.size() + 8) {
    Check(hello.target_id == 0);
    Check(encoded.compare(0, payload.size(), payload) == 0);
  } else {
    Check(encoded == payload);
  }
  HelloRequest again;
  Check(DecodeHello(encoded, &again).ok());
  Check(again.epoch == hello.epoch && again.volume_id == hello.volume_id &&
        again.token == hello.token && again.target_id == hello.target_id &&
        again.proof == hello.proof);
  // A proof, when there is one, is exactly kProofSize bytes.
  Check(hello.proof.empty() || hello.proof.size() == tandem::protocol::kProofSize);
}

void FuzzGenerationRecord(std::string_view payload) {
  GenerationRecord rec;
  if (!DecodeGenerationRecord(payload, &rec).ok()) return;
  Check(rec.id != 0 && rec.history.size() <= tandem::protocol::kMaxGenerationHistory);
  for (uint64_t id : rec.history) Check(id != 0);
  Check(payload.size() <= tandem::protocol::kMaxGenerationRecordSize);
  std::string encoded;
  Check(EncodeGenerationRecord(rec, &encoded).ok());
  Check(encoded == payload);
}

void FuzzReplicaInfo(std::string_view payload) {
  ReplicaInfo info;
  if (!DecodeReplicaInfo(payload, &info).ok()) return;
  std::string encoded;
  Check(EncodeReplicaInfo(info, &encoded).ok());
  const size_t legacy = tandem::protocol::kReplicaInfoLegacySize + info.replica_id.size();
  const size_t rebuild = legacy + tandem::protocol::kReplicaInfoRebuildFieldsSize;
  if (payload.size() == legacy || payload.size() == rebuild) {
    // An older replica's reply: the same bytes, then the appended fields as
    // "none" (all zero).
    Check(encoded.size() == rebuild + tandem::protocol::kReplicaInfoGenerationFieldsSize);
    Check(encoded.compare(0, payload.size(), payload) == 0);
    Check(encoded.find_first_not_of('\0', payload.size()) == std::string::npos);
  } else {
    Check(encoded == payload);
  }
  Check(info.tracking_dirty || info.dirty_since_generation == 0);
  Check(info.generation_history.size() <= tandem::protocol::kMaxGenerationHistory);
  Check(info.generation_id != 0 || info.generation_history.empty());
  Check(info.activity_extent_size != 0 || info.activity_count == 0);
  ReplicaInfo again;
  Check(DecodeReplicaInfo(encoded, &again).ok());
  Check(again.size == info.size && again.block_size == info.block_size &&
        again.max_inflight == info.max_inflight && again.generation == info.generation &&
        again.highest_epoch == info.highest_epoch && again.replica_id == info.replica_id &&
        again.tracking_dirty == info.tracking_dirty &&
        again.dirty_since_generation == info.dirty_since_generation &&
        again.rebuild_cursor == info.rebuild_cursor &&
        again.rebuild_generation == info.rebuild_generation &&
        again.generation_id == info.generation_id &&
        again.generation_history == info.generation_history &&
        again.clean_shutdown == info.clean_shutdown &&
        again.activity_extent_size == info.activity_extent_size &&
        again.activity_count == info.activity_count);
}

void FuzzAllocation(std::string_view payload) {
  AllocationList list;
  if (!DecodeAllocation(payload, &list).ok()) return;
  // The extents are a view into the payload, exactly count of them, and obey
  // the rules a requester relies on to walk a range.
  Check(list.count <= tandem::protocol::kMaxAllocationExtents);
  Check(list.extents.data() == payload.data() + tandem::protocol::kAllocationPrefixSize);
  Check(list.extents.size() == size_t{list.count} * tandem::protocol::kAllocationExtentSize);
  Check(payload.size() <= tandem::protocol::kMaxAllocationReply);
  AllocationExtent extents[tandem::protocol::kMaxAllocationExtents];
  uint64_t prev_end = 0;
  for (uint32_t i = 0; i < list.count; ++i) {
    extents[i] = list.extent(i);
    Check(extents[i].length > 0);
    Check(extents[i].offset + extents[i].length > extents[i].offset);  // no overflow
    Check(i == 0 || extents[i].offset >= prev_end);
    prev_end = extents[i].offset + extents[i].length;
    Check(prev_end <= list.covered_end);
  }
  std::string encoded;
  Check(EncodeAllocation(list.covered_end, extents, list.count, &encoded).ok());
  Check(encoded == payload);
  // Whatever a replica answers, a requester that checks it always progresses.
  if (list.covered_end > 0) {
    const uint64_t offset = list.count > 0 ? extents[0].offset : list.covered_end - 1;
    if (list.covered_end - offset <= UINT32_MAX) {
      Check(tandem::protocol::CheckAllocationAnswers(
                list, offset, static_cast<uint32_t>(list.covered_end - offset))
                .ok());
    }
  }
}

void FuzzRebuildCursor(std::string_view payload) {
  RebuildCursor c;
  if (!DecodeRebuildCursor(payload, &c).ok()) return;
  Check(payload.size() == tandem::protocol::kRebuildCursorSize);
  uint8_t encoded[tandem::protocol::kRebuildCursorSize];
  EncodeRebuildCursor(c, encoded);
  Check(std::memcmp(encoded, payload.data(), sizeof(encoded)) == 0);
}

void FuzzDirtyMap(std::string_view payload) {
  DirtyMapChunk chunk;
  if (!DecodeDirtyMap(payload, &chunk).ok()) return;
  // The bitmap is a view into the payload, within it, and never longer than
  // the map of the volume it describes or a frame.
  Check(chunk.bitmap.data() == payload.data() + tandem::protocol::kDirtyMapPrefixSize);
  Check(chunk.bitmap.size() == payload.size() - tandem::protocol::kDirtyMapPrefixSize);
  Check(chunk.bitmap.size() <=
        tandem::protocol::DirtyMapBytes(chunk.volume_size, chunk.region_size));
  Check(chunk.bitmap.size() <= tandem::protocol::kMaxDirtyMapChunk);
  std::string encoded;
  Check(EncodeDirtyMap(chunk, &encoded).ok());
  Check(encoded == payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Message decoders on the raw input too, so they are fuzzed even when the
  // fuzzer has not (yet) found a valid header.
  std::string_view all(reinterpret_cast<const char*>(data), size);
  FuzzHello(all);
  FuzzReplicaInfo(all);
  FuzzDirtyMap(all);
  FuzzAllocation(all);
  FuzzRebuildCursor(all);
  FuzzGenerationRecord(all);

  if (size < kHeaderSize) return 0;
  FrameHeader h;
  if (DecodeHeader(data, &h) != DecodeResult::kOk) return 0;
  Check(h.payload_length <= kMaxPayload);
  // Only the data frames (and GET_DIRTY_MAP / GET_ALLOCATION replies) may
  // exceed the control limit.
  if (h.payload_length > tandem::protocol::kMaxControlPayload) {
    using tandem::protocol::Opcode;
    const Opcode op = h.op();
    Check(h.is_reply() ? (op == Opcode::kRead || op == Opcode::kGetDirtyMap ||
                          (op == Opcode::kGetAllocation &&
                           h.payload_length <= tandem::protocol::kMaxAllocationReply))
                       : op == Opcode::kWrite);
  }

  uint8_t reencoded[kHeaderSize];
  EncodeHeader(h, reencoded);
  // The reserved word is ignored on decode and written as zero.
  Check(std::memcmp(reencoded, data, 36) == 0 && std::memcmp(reencoded + 40, data + 40, 4) == 0);

  const size_t available = size - kHeaderSize;
  if (h.payload_length > available) return 0;  // the receiver would wait for more bytes
  const uint8_t* payload = data + kHeaderSize;
  (void)tandem::protocol::CheckPayload(h, payload);
  std::string_view p(reinterpret_cast<const char*>(payload), h.payload_length);
  FuzzHello(p);
  FuzzReplicaInfo(p);
  FuzzDirtyMap(p);
  FuzzAllocation(p);
  FuzzRebuildCursor(p);
  FuzzGenerationRecord(p);
  return 0;
}

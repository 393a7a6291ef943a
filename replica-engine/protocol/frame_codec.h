#pragma once
// Encoding and decoding of data-protocol frames (see wire_format.h and
// docs/protocol.md). Pure functions over byte buffers: no sockets, no
// allocation, so the decoder can be fuzzed and used from any I/O loop.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "replica-engine/protocol/wire_format.h"

namespace tandem::protocol {

struct FrameHeader {
  uint8_t opcode = 0;  // including kReplyBit for replies
  uint16_t flags = 0;
  uint64_t request_id = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t payload_length = 0;
  WireStatus status = WireStatus::kOk;
  uint32_t payload_crc = 0;

  bool is_reply() const { return (opcode & kReplyBit) != 0; }
  Opcode op() const { return static_cast<Opcode>(opcode & ~kReplyBit); }
};

// Writes the 48-byte header to out[0, kHeaderSize), computing header_crc.
// payload_crc must already be set (use Crc32c over the payload).
void EncodeHeader(const FrameHeader& h, uint8_t* out);

enum class DecodeResult {
  kOk,
  kBadMagic,
  kBadVersion,
  kBadHeaderCrc,
  kOversized,  // payload_length > kMaxPayload, or a control frame > kMaxControlPayload
  kBadFlags,   // unknown flag bits
};
const char* DecodeResultName(DecodeResult r);

// Decodes and validates a header from in[0, kHeaderSize). Validation covers
// magic, version, header crc, payload size limits and flag bits; it does not
// check the opcode (an unknown opcode is answered with kUnsupported, not a
// disconnect) or the payload crc (see CheckPayload).
DecodeResult DecodeHeader(const uint8_t* in, FrameHeader* h);

// True when crc32c(payload) equals h.payload_crc.
// REQUIRES: payload has h.payload_length bytes.
bool CheckPayload(const FrameHeader& h, const void* payload);

// HELLO request payload.
//   u64 epoch | u16 volume_id_len | volume_id | u16 token_len | token |
//   u64 target_id | [proof: kProofSize bytes]
// target_id was appended: a payload that ends after the token (an older
// target) decodes with target_id 0. The encoder always writes it. The proof
// (hello_proof.h) follows only when present (a volume with a secret).
struct HelloRequest {
  uint64_t epoch = 0;
  std::string volume_id;
  std::string token;
  // Random non-zero id of the target instance (0: an older target). At an
  // epoch equal to the replica's highest, only the target that owns that
  // epoch is accepted (docs/protocol.md, Fencing).
  uint64_t target_id = 0;
  // Empty, or kProofSize bytes: HMAC-SHA256 of the volume's secret over the
  // connection's CHALLENGE nonce and this HELLO (hello_proof.h).
  std::string proof;
};
// HELLO reply (and GET_INFO reply) payload.
//   u64 size | u32 block_size | u32 max_inflight | u64 generation |
//   u64 highest_epoch | u16 replica_id_len | replica_id |
//   u8 tracking_dirty | u64 dirty_since_generation | u64 rebuild_cursor |
//   u64 rebuild_generation |
//   u64 generation_id | u8 history_count | history_count x u64 |
//   u8 clean_shutdown | u32 activity_extent_size | u32 activity_count
// Fields were appended twice: a payload that ends after replica_id (an older
// replica) decodes with everything after it 0/false/empty, one that ends
// after rebuild_generation with the generation-id and activity fields 0/empty.
// The encoder always writes every field.
struct ReplicaInfo {
  uint64_t size = 0;
  uint32_t block_size = 0;
  uint32_t max_inflight = 0;
  uint64_t generation = 0;
  uint64_t highest_epoch = 0;
  std::string replica_id;
  // Whether the replica records written regions in its dirty map
  // (SET_GENERATION with kFlagTrackDirty).
  bool tracking_dirty = false;
  // The generation set by the SET_GENERATION that turned tracking on: the map
  // holds every region written since the replica reached this generation.
  // Unchanged while tracking stays on; 0 while tracking is off.
  uint64_t dirty_since_generation = 0;
  // Last SET_REBUILD_CURSOR persisted on this replica (0: none) and the
  // generation recorded with it.
  uint64_t rebuild_cursor = 0;
  uint64_t rebuild_generation = 0;
  // The id of the current generation (random, non-zero; 0: never set) and
  // the ids of the previous ones, newest first (at most
  // kMaxGenerationHistory; empty when generation_id is 0; no id is 0).
  uint64_t generation_id = 0;
  std::vector<uint64_t> generation_history;
  // Whether the replica's previous shutdown was clean (read when it was
  // opened; a replica created by this engine run counts as clean).
  bool clean_shutdown = false;
  // The activity log (docs/protocol.md, GET_DIRTY_MAP with kFlagActivity):
  // bytes per extent (0: the replica keeps none; else a power of two >= 512)
  // and the extents currently marked active (0 when activity_extent_size is 0).
  uint32_t activity_extent_size = 0;
  uint32_t activity_count = 0;
};
// Size of a ReplicaInfo payload without / with the appended rebuild fields,
// for a replica_id of n bytes; the generation-id fields take
// kReplicaInfoGenerationFieldsSize + 8 per history id.
inline constexpr size_t kReplicaInfoLegacySize = 8 + 4 + 4 + 8 + 8 + 2;
inline constexpr size_t kReplicaInfoRebuildFieldsSize = 1 + 8 + 8 + 8;
inline constexpr size_t kReplicaInfoGenerationFieldsSize = 8 + 1 + 1 + 4 + 4;

// SET_GENERATION request payload (optional; docs/protocol.md, SET_GENERATION).
//   u64 id | u8 history_count | history_count x u64 history
// id != 0; history_count <= kMaxGenerationHistory; no history id is 0. The
// replica persists exactly this id and history with the generation number.
struct GenerationRecord {
  uint64_t id = 0;
  std::vector<uint64_t> history;  // newest first
};
// Encode into `out` (cleared first); INVALID_ARGUMENT when the record breaks
// the rules above. At most kMaxGenerationRecordSize bytes.
Status EncodeGenerationRecord(const GenerationRecord& record, std::string* out);
// INVALID_ARGUMENT on a payload that is truncated, has trailing bytes, or
// breaks the rules above.
Status DecodeGenerationRecord(std::string_view payload, GenerationRecord* record);

// GET_DIRTY_MAP reply payload (docs/protocol.md, GET_DIRTY_MAP).
//   u32 region_size | u64 volume_size | bitmap bytes
// Bit i of the bitmap (LSB first: byte i / 8, mask 1 << (i % 8)) is region
// first + i, where first = (the request's offset) / region_size; a set bit
// means the region is dirty. A bitmap never reaches past the last region; bits
// of the last byte beyond it are zero.
inline constexpr size_t kDirtyMapPrefixSize = 12;
// Largest bitmap one reply can carry: (1 MiB - 12) bytes, i.e. ~8M regions,
// ~512 GiB of volume at 64 KiB regions. Larger maps take several requests.
inline constexpr uint32_t kMaxDirtyMapChunk = kMaxPayload - kDirtyMapPrefixSize;
struct DirtyMapChunk {
  uint32_t region_size = 0;  // power of two >= 512
  uint64_t volume_size = 0;  // > 0
  // 1..min(kMaxDirtyMapChunk, DirtyMapBytes(volume_size, region_size)) bytes.
  // Decode: a view into the payload (nothing is copied).
  std::string_view bitmap;
};
// Bytes of a whole map: ceil(ceil(volume_size / region_size) / 8); 0 when
// region_size is 0.
uint64_t DirtyMapBytes(uint64_t volume_size, uint32_t region_size);

// GET_ALLOCATION reply payload (docs/protocol.md, GET_ALLOCATION).
//   u64 covered_end | u32 count | count x (u64 offset, u64 length)
// The allocated extents of the replica's data within [request offset,
// covered_end), in increasing offset order, not overlapping, each non-empty
// and ending at or before covered_end. count <= kMaxAllocationExtents.
// covered_end < request offset + length means the list was cut short: the
// caller asks again from covered_end. Everything in [request offset,
// covered_end) outside the extents is a hole (reads as zeroes).
struct AllocationExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const AllocationExtent&) const = default;
};
struct AllocationList {
  uint64_t covered_end = 0;
  uint32_t count = 0;
  // Decode: a view of count * kAllocationExtentSize bytes of the payload
  // (nothing is copied); read the extents with extent(i).
  std::string_view extents;
  // REQUIRES: i < count, extents valid (decoded).
  AllocationExtent extent(uint32_t i) const;
};
// Encode `count` extents and covered_end into `out` (cleared first).
// INVALID_ARGUMENT when the list breaks the rules above.
Status EncodeAllocation(uint64_t covered_end, const AllocationExtent* extents, uint32_t count,
                        std::string* out);
// INVALID_ARGUMENT on a payload that is truncated, has trailing bytes, more
// than kMaxAllocationExtents extents, or extents that are empty, overlap, are
// out of order, overflow u64 or end past covered_end.
Status DecodeAllocation(std::string_view payload, AllocationList* list);
// The checks a requester adds, knowing its request [offset, offset + length):
// covered_end in (offset, offset + length] (so asking again from covered_end
// always progresses) and the first extent starting at or after offset.
// INVALID_ARGUMENT otherwise.
Status CheckAllocationAnswers(const AllocationList& list, uint64_t offset, uint32_t length);

// SET_REBUILD_CURSOR request payload: u64 cursor | u64 generation
// (kRebuildCursorSize bytes). cursor 0 clears the persisted cursor.
struct RebuildCursor {
  uint64_t cursor = 0;
  uint64_t generation = 0;
};
// Writes exactly kRebuildCursorSize bytes to out (a buffer the caller keeps
// alive until the request completes: it is the request's payload).
void EncodeRebuildCursor(const RebuildCursor& c, uint8_t* out);
// INVALID_ARGUMENT unless the payload is exactly kRebuildCursorSize bytes.
Status DecodeRebuildCursor(std::string_view payload, RebuildCursor* c);

// Encode into `out` (cleared first). INVALID_ARGUMENT if a string exceeds its limit.
Status EncodeHello(const HelloRequest& hello, std::string* out);
Status EncodeReplicaInfo(const ReplicaInfo& info, std::string* out);
// Decode; INVALID_ARGUMENT naming the field on truncated, oversized or trailing bytes
// (and, for ReplicaInfo, a tracking_dirty or clean_shutdown byte other than
// 0/1, tracking off with a non-zero dirty_since_generation, a history longer
// than kMaxGenerationHistory, a zero id in it, a history without a
// generation_id, or activity fields that break the rules above). Encode
// refuses the same values.
Status DecodeHello(std::string_view payload, HelloRequest* hello);
Status DecodeReplicaInfo(std::string_view payload, ReplicaInfo* info);
// INVALID_ARGUMENT on a region size that is not a power of two >= 512, a zero
// volume size, or a bitmap that is empty, longer than the whole map or longer
// than kMaxDirtyMapChunk (and, on decode, a payload shorter than the prefix).
Status EncodeDirtyMap(const DirtyMapChunk& chunk, std::string* out);
Status DecodeDirtyMap(std::string_view payload, DirtyMapChunk* chunk);

}  // namespace tandem::protocol

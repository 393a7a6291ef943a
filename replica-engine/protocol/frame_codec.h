#pragma once
// Encoding and decoding of data-protocol frames (see wire_format.h and
// docs/protocol.md). Pure functions over byte buffers: no sockets, no
// allocation, so the decoder can be fuzzed and used from any I/O loop.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

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
//   u64 epoch | u16 volume_id_len | volume_id | u16 token_len | token
struct HelloRequest {
  uint64_t epoch = 0;
  std::string volume_id;
  std::string token;
};
// HELLO reply (and GET_INFO reply) payload.
//   u64 size | u32 block_size | u32 max_inflight | u64 generation |
//   u64 highest_epoch | u16 replica_id_len | replica_id |
//   u8 tracking_dirty | u64 dirty_since_generation | u64 rebuild_cursor |
//   u64 rebuild_generation
// The last four fields were appended for rebuild; a payload that ends after
// replica_id (an older replica) decodes with them all 0/false. The encoder
// always writes them.
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
};
// Size of a ReplicaInfo payload without / with the appended rebuild fields,
// for a replica_id of n bytes.
inline constexpr size_t kReplicaInfoLegacySize = 8 + 4 + 4 + 8 + 8 + 2;
inline constexpr size_t kReplicaInfoRebuildFieldsSize = 1 + 8 + 8 + 8;

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
// (and, for ReplicaInfo, a tracking_dirty byte other than 0/1, or tracking off
// with a non-zero dirty_since_generation).
Status DecodeHello(std::string_view payload, HelloRequest* hello);
Status DecodeReplicaInfo(std::string_view payload, ReplicaInfo* info);
// INVALID_ARGUMENT on a region size that is not a power of two >= 512, a zero
// volume size, or a bitmap that is empty, longer than the whole map or longer
// than kMaxDirtyMapChunk (and, on decode, a payload shorter than the prefix).
Status EncodeDirtyMap(const DirtyMapChunk& chunk, std::string* out);
Status DecodeDirtyMap(std::string_view payload, DirtyMapChunk* chunk);

}  // namespace tandem::protocol

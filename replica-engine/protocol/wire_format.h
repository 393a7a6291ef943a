#pragma once
// The target <-> replica data protocol: every constant of the wire format in one
// place. The format is specified in prose in docs/protocol.md; keep both in step.
//
// A frame is a fixed 48-byte header followed by `payload_length` payload bytes.
// All integers are little-endian.
//
//   off size field
//    0   4   magic           kFrameMagic
//    4   1   version         kProtocolVersion
//    5   1   opcode          Opcode; replies set kReplyBit
//    6   2   flags           kFlagFua, ...
//    8   8   request_id      chosen by the client, echoed in the reply
//   16   8   offset          bytes (READ/WRITE/TRIM/WRITE_ZEROES/...)
//   24   4   length          bytes the operation covers
//   28   4   payload_length  bytes following the header
//   32   4   status          replies: WireStatus; requests: 0
//   36   4   reserved        0
//   40   4   payload_crc     crc32c of the payload (0 when payload_length == 0)
//   44   4   header_crc      crc32c of bytes [0, 44)

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace tandem::protocol {

inline constexpr uint32_t kFrameMagic = 0x4D444E54;  // "TNDM" little-endian
inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 48;
// Largest READ/WRITE a single frame may carry, and the largest payload of any
// frame. A header announcing more closes the connection before the payload is read.
inline constexpr uint32_t kMaxIoSize = 1u << 20;  // 1 MiB
inline constexpr uint32_t kMaxPayload = kMaxIoSize;
// HELLO and GET_INFO payloads are small; anything larger is malformed.
// (GET_DIRTY_MAP replies, like READ replies, may carry up to kMaxPayload;
// GET_ALLOCATION replies up to kMaxAllocationReply.)
inline constexpr uint32_t kMaxControlPayload = 4096;
inline constexpr size_t kMaxVolumeIdLength = 128;
inline constexpr size_t kMaxTokenLength = 256;
// Per-volume secrets and the HELLO proof: HMAC-SHA256(secret, nonce ||
// u16 volume_id_len || volume_id || u64 epoch || u64 target_id).
inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kProofSize = 32;  // SHA-256
inline constexpr size_t kMinSecretLength = 16;
inline constexpr size_t kMaxSecretLength = 256;

inline constexpr uint8_t kReplyBit = 0x80;

enum class Opcode : uint8_t {
  kHello = 1,  // must be the first frame on a connection
  kRead = 2,
  kWrite = 3,
  kFlush = 4,
  kTrim = 5,
  kWriteZeroes = 6,
  kGetInfo = 7,
  // offset = new generation (never lower than the current one); persisted
  // before the reply. With kFlagTrackDirty the replica starts recording the
  // regions of every later WRITE/TRIM/WRITE_ZEROES in its dirty map (persisted
  // before the write is submitted); without it, stops recording (map kept).
  // Optional request payload (length == payload_length): a GenerationRecord
  // (frame_codec.h), the generation's id and history, persisted as given;
  // without one the replica draws the id itself when the number grows.
  kSetGeneration = 8,
  // Marks every region overlapping [offset, offset + length) dirty and persists
  // the map before replying.
  kMarkDirty = 9,
  // Reply payload: a DirtyMapChunk (frame_codec.h) starting at the region of
  // byte `offset` (a multiple of 8 regions); request `length` caps the reply
  // payload (0: kMaxPayload). With kFlagActivity: the activity log instead.
  kGetDirtyMap = 10,
  // Clears the regions of [offset, offset + length) (region-aligned, or ending
  // at the volume end) and persists the map before replying.
  kClearDirty = 11,
  // Request [offset, offset + length) = a byte range of the volume (block
  // rules of READ/WRITE; length up to 4 GiB - block). Reply payload: an
  // AllocationList (frame_codec.h): the allocated extents of the data within
  // [offset, covered_end), at most kMaxAllocationExtents of them; covered_end
  // < offset + length when the list was cut short (ask again from there).
  kGetAllocation = 12,
  // Request payload (kRebuildCursorSize bytes, length == payload_length): a
  // RebuildCursor (frame_codec.h), persisted in the replica metadata before
  // the reply. cursor 0 clears it. Reported in every ReplicaInfo.
  kSetRebuildCursor = 13,
  // Before HELLO, at most once per connection, for a volume with a secret
  // (docs/protocol.md, CHALLENGE): no request payload; reply payload: the
  // connection's random nonce (kNonceSize bytes), over which the HELLO's
  // proof is computed.
  kChallenge = 14,
  // 15..31 reserved.
};

// GET_ALLOCATION: most extents one reply carries, and the largest reply
// payload (u64 covered_end | u32 count | count x (u64 offset, u64 length)).
// A caller of GET_ALLOCATION sizes its reply buffer with kMaxAllocationReply.
inline constexpr uint32_t kMaxAllocationExtents = 1024;
inline constexpr uint32_t kAllocationPrefixSize = 12;
inline constexpr uint32_t kAllocationExtentSize = 16;
inline constexpr uint32_t kMaxAllocationReply =
    kAllocationPrefixSize + kMaxAllocationExtents * kAllocationExtentSize;  // 16396
// SET_REBUILD_CURSOR request payload: u64 cursor | u64 generation.
inline constexpr uint32_t kRebuildCursorSize = 16;
// Generation ids (DRBD's data-generation UUIDs): most previous ids a
// GenerationRecord / ReplicaInfo carries, newest first.
inline constexpr uint32_t kMaxGenerationHistory = 8;
// SET_GENERATION payload: u64 id | u8 history_count | history_count x u64.
inline constexpr uint32_t kMaxGenerationRecordSize = 8 + 1 + 8 * kMaxGenerationHistory;  // 73

inline constexpr uint16_t kFlagFua = 1u << 0;
inline constexpr uint16_t kFlagTrackDirty = 1u << 1;  // kSetGeneration only; ignored elsewhere
// kGetDirtyMap only (ignored elsewhere): return the activity log instead of
// the dirty map, in the same DirtyMapChunk format (region_size = the
// activity extent size).
inline constexpr uint16_t kFlagActivity = 1u << 2;
inline constexpr uint16_t kKnownFlags = kFlagFua | kFlagTrackDirty | kFlagActivity;

// Status carried in a reply header. Stable numbers: they are on the wire.
enum class WireStatus : int32_t {
  kOk = 0,
  kIoError = 1,      // the backend reported an error (EIO, ...)
  kInvalid = 2,      // bad offset/length/alignment/flags for this op
  kNoSpace = 3,      // ENOSPC on the replica
  kOutOfRange = 4,   // beyond the replica size
  kNotFound = 5,     // HELLO: no replica for this volume id
  kAuthFailed = 6,   // HELLO: wrong token
  kStaleEpoch = 7,   // HELLO or any request: a higher epoch has taken over
  kUnsupported = 8,  // unknown opcode or protocol version
  kNotReady = 9,     // request before a successful HELLO
};

const char* OpcodeName(uint8_t opcode);
const char* WireStatusName(WireStatus status);
// A replica's reply status as a request's status code (what a target's
// channel to the replica, over TCP or in-process, reports).
StatusCode StatusCodeOf(WireStatus status);

}  // namespace tandem::protocol

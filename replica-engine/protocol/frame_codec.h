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
//   u64 highest_epoch | u16 replica_id_len | replica_id
struct ReplicaInfo {
  uint64_t size = 0;
  uint32_t block_size = 0;
  uint32_t max_inflight = 0;
  uint64_t generation = 0;
  uint64_t highest_epoch = 0;
  std::string replica_id;
};

// Encode into `out` (cleared first). INVALID_ARGUMENT if a string exceeds its limit.
Status EncodeHello(const HelloRequest& hello, std::string* out);
Status EncodeReplicaInfo(const ReplicaInfo& info, std::string* out);
// Decode; INVALID_ARGUMENT naming the field on truncated, oversized or trailing bytes.
Status DecodeHello(std::string_view payload, HelloRequest* hello);
Status DecodeReplicaInfo(std::string_view payload, ReplicaInfo* info);

}  // namespace tandem::protocol

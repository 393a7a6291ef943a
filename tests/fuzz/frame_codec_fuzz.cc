// libFuzzer target for the data-protocol decoder: the code that parses bytes
// straight off the network before anything is authenticated.
//
// Input: a 48-byte header followed by payload bytes. Every header goes through
// DecodeHeader; an accepted one has its payload crc checked against the
// remaining bytes, and the payload is parsed as HELLO, ReplicaInfo and a
// GET_DIRTY_MAP chunk (a peer parses whichever its opcode says; here all are
// exercised on every input). A decoded message must re-encode to bytes that decode to the same
// value, and an accepted header must re-encode to the same 48 bytes.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "replica-engine/protocol/frame_codec.h"

namespace {

using tandem::protocol::DecodeDirtyMap;
using tandem::protocol::DecodeHeader;
using tandem::protocol::DecodeHello;
using tandem::protocol::DecodeReplicaInfo;
using tandem::protocol::DecodeResult;
using tandem::protocol::DirtyMapChunk;
using tandem::protocol::EncodeDirtyMap;
using tandem::protocol::EncodeHeader;
using tandem::protocol::EncodeHello;
using tandem::protocol::EncodeReplicaInfo;
using tandem::protocol::FrameHeader;
using tandem::protocol::HelloRequest;
using tandem::protocol::kHeaderSize;
using tandem::protocol::kMaxPayload;
using tandem::protocol::ReplicaInfo;

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

void FuzzHello(std::string_view payload) {
  HelloRequest hello;
  if (!DecodeHello(payload, &hello).ok()) return;
  std::string encoded;
  Check(EncodeHello(hello, &encoded).ok());
  // The encoding is canonical: whatever decoded must be exactly that encoding.
  Check(encoded == payload);
  HelloRequest again;
  Check(DecodeHello(encoded, &again).ok());
  Check(again.epoch == hello.epoch && again.volume_id == hello.volume_id &&
        again.token == hello.token);
}

void FuzzReplicaInfo(std::string_view payload) {
  ReplicaInfo info;
  if (!DecodeReplicaInfo(payload, &info).ok()) return;
  std::string encoded;
  Check(EncodeReplicaInfo(info, &encoded).ok());
  Check(encoded == payload);
  ReplicaInfo again;
  Check(DecodeReplicaInfo(encoded, &again).ok());
  Check(again.size == info.size && again.block_size == info.block_size &&
        again.max_inflight == info.max_inflight && again.generation == info.generation &&
        again.highest_epoch == info.highest_epoch && again.replica_id == info.replica_id);
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

  if (size < kHeaderSize) return 0;
  FrameHeader h;
  if (DecodeHeader(data, &h) != DecodeResult::kOk) return 0;
  Check(h.payload_length <= kMaxPayload);

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
  return 0;
}

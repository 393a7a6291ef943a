// libFuzzer target for the replica metadata slot decoder, which parses bytes
// read back from disk (possibly torn or corrupted).
//
// Checks, beyond "no crash / no out-of-bounds read" (ASan):
// - a decoded record re-encodes without error into a slot of the same size;
// - the re-encoding is byte-identical to the input (the format is canonical:
//   fixed layout, zero padding, crc), and decodes to the same record.
//
// Seeds: tests/fuzz/corpus/replica_metadata/ (valid slot images).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "replica-engine/replica/replica_metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tandem::replica::DecodeMetadataSlot;
  using tandem::replica::EncodeMetadataSlot;
  using tandem::replica::ReplicaMetadata;

  ReplicaMetadata md;
  uint64_t seq = 0;
  if (!DecodeMetadataSlot(data, size, &md, &seq).ok()) return 0;

  std::string image;
  if (!EncodeMetadataSlot(md, seq, size, &image).ok()) __builtin_trap();
  if (image.size() != size || std::memcmp(image.data(), data, size) != 0) __builtin_trap();

  ReplicaMetadata again;
  uint64_t seq_again = 0;
  if (!DecodeMetadataSlot(image.data(), image.size(), &again, &seq_again).ok()) __builtin_trap();
  if (!(again == md) || seq_again != seq) __builtin_trap();
  return 0;
}

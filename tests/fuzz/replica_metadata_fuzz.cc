// libFuzzer target for the replica metadata slot decoder, which parses bytes
// read back from disk (possibly torn or corrupted).
//
// Checks, beyond "no crash / no out-of-bounds read" (ASan):
// - a decoded record re-encodes without error into a slot of the same size;
// - for a slot of the current format version the re-encoding is
//   byte-identical to the input (the format is canonical: fixed layout, zero
//   padding, crc); an older-version slot (version 1, no tracking_dirty) is
//   re-encoded in the current version, so only the record must survive;
// - the re-encoding decodes to the same record and sequence.
//
// Seeds: tests/fuzz/corpus/replica_metadata/ (valid slot images of format
// versions 1 and 2).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/coding.h"
#include "replica-engine/replica/replica_metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tandem::replica::DecodeMetadataSlot;
  using tandem::replica::EncodeMetadataSlot;
  using tandem::replica::ReplicaMetadata;

  ReplicaMetadata md;
  uint64_t seq = 0;
  if (!DecodeMetadataSlot(data, size, &md, &seq).ok()) return 0;

  // Decode succeeded, so the slot has at least its fixed header (version at 8).
  const uint32_t version = tandem::DecodeFixed32(data + 8);
  const bool current = version == tandem::replica::kMetadataFormatVersion;
  // A version-1 record is one byte (tracking_dirty) shorter than its
  // re-encoding; real slots are 4 KiB multiples with room, fuzzed ones may be
  // cut to the record's exact length.
  const size_t slot = current ? size : size + 1;
  std::string image;
  if (!EncodeMetadataSlot(md, seq, slot, &image).ok()) __builtin_trap();
  if (image.size() != slot) __builtin_trap();
  if (current) {
    if (std::memcmp(image.data(), data, size) != 0) __builtin_trap();
  } else if (md.tracking_dirty) {
    __builtin_trap();  // older versions cannot express tracking
  }

  ReplicaMetadata again;
  uint64_t seq_again = 0;
  if (!DecodeMetadataSlot(image.data(), image.size(), &again, &seq_again).ok()) __builtin_trap();
  if (!(again == md) || seq_again != seq) __builtin_trap();
  return 0;
}

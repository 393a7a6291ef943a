// libFuzzer target for the replica metadata slot decoder, which parses bytes
// read back from disk (possibly torn or corrupted).
//
// Checks, beyond "no crash / no out-of-bounds read" (ASan):
// - a decoded record re-encodes without error into a slot of the same size;
// - for a slot of the current format version the re-encoding is
//   byte-identical to the input (the format is canonical: fixed layout, zero
//   padding, crc); an older-version slot (version 1: no tracking_dirty;
//   version 2: no dirty_since_generation, rebuild_cursor, rebuild_generation)
//   is re-encoded in the current version, so only the record must survive,
//   with the defaults the older version implies (version 3: no generation
//   ids, owner or activity log);
// - the re-encoding decodes to the same record and sequence.
//
// Seeds: tests/fuzz/corpus/replica_metadata/ (valid slot images of format
// versions 1 to 4).

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
  // An older record is shorter than its re-encoding (by the 25 bytes of the
  // version-4 fields with an empty history, and version 2 by 24 more:
  // the version-3 fields, version 1 by 25 more: tracking_dirty too); real
  // slots are 4 KiB multiples with room, fuzzed ones may be cut to the
  // record's exact length.
  const size_t slot = current ? size : size + 25 + (version <= 2 ? 24 : 0) + (version == 1 ? 1 : 0);
  std::string image;
  if (!EncodeMetadataSlot(md, seq, slot, &image).ok()) __builtin_trap();
  if (image.size() != slot) __builtin_trap();
  if (current) {
    if (std::memcmp(image.data(), data, size) != 0) __builtin_trap();
  } else {
    // What an older version implies: before 3 no checkpoint and tracking
    // (version 2 only) counted from the current generation; before 4 no
    // generation ids, owner or activity log.
    if (version == 1 && md.tracking_dirty) __builtin_trap();
    if (version < 3 && md.dirty_since_generation != (md.tracking_dirty ? md.generation : 0)) {
      __builtin_trap();
    }
    if (version < 3 && (md.rebuild_cursor != 0 || md.rebuild_generation != 0)) __builtin_trap();
    if (md.generation_id != 0 || !md.generation_history.empty() || md.epoch_owner != 0 ||
        md.activity_extent_size != 0 || !md.activity_map.empty()) {
      __builtin_trap();
    }
  }

  ReplicaMetadata again;
  uint64_t seq_again = 0;
  if (!DecodeMetadataSlot(image.data(), image.size(), &again, &seq_again).ok()) __builtin_trap();
  if (!(again == md) || seq_again != seq) __builtin_trap();
  return 0;
}

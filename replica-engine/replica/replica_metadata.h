#pragma once
// The crash-safe metadata record of one replica, and the file that holds it.
// On-disk format: docs/replica_metadata.md.
//
// The file has two slots of equal size. Update() writes the new record into the
// slot not holding the current one, then fdatasync()s, so a crash or torn write
// during an update leaves the previous record intact in the other slot. Open()
// reads both slots, drops any whose magic, size or crc32c does not check, and
// takes the one with the highest sequence number.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace tandem::replica {

struct ReplicaMetadata {
  std::string volume_id;   // <= 128 bytes
  std::string replica_id;  // <= 128 bytes
  std::string data_path;   // data file or block device; <= 1024 bytes
  uint64_t size = 0;       // bytes; multiple of block_size
  uint32_t block_size = 4096;
  uint64_t generation = 0;      // bumped by the volume target when a peer faults
  uint64_t highest_epoch = 0;   // highest target epoch accepted (fencing)
  bool clean_shutdown = false;  // true only between a clean Close() and the next Open()
  // Dirty-region map: one bit per `dirty_region_size` bytes of the volume
  // (region r is byte r / 8, mask 1 << (r % 8)), recorded while a peer replica
  // is faulted. dirty_region_size == 0: no map.
  uint32_t dirty_region_size = 0;
  std::vector<uint8_t> dirty_map;  // ceil(size / dirty_region_size / 8) bytes
  // Format version 2: every WRITE/TRIM/WRITE_ZEROES marks its regions in
  // dirty_map before it is submitted (set by SET_GENERATION with
  // kFlagTrackDirty). Persistent, so a restart keeps recording. Version-1
  // records decode with false.
  bool tracking_dirty = false;
  // Format version 3. The generation set by the SET_GENERATION that turned
  // tracking on (kept while it stays on; 0 while tracking is off), and the
  // rebuild checkpoint of SET_REBUILD_CURSOR (cursor <= size; 0: none, and
  // then rebuild_generation is 0 too). A version-2 record decodes with
  // dirty_since_generation = generation when tracking (the latest it can have
  // started: an over-estimate only makes a target choose a full rebuild),
  // else 0, and no cursor.
  uint64_t dirty_since_generation = 0;
  uint64_t rebuild_cursor = 0;
  uint64_t rebuild_generation = 0;
  // Format version 4 (older versions decode with all of these 0/empty).
  // Generation ids (DRBD's data-generation UUIDs): the random non-zero id of
  // the current generation (0: never set) and the ids of the previous ones,
  // newest first (at most kMaxGenerationHistory, none 0, empty while
  // generation_id is 0).
  uint64_t generation_id = 0;
  std::vector<uint64_t> generation_history;
  // The target_id (HELLO) that holds highest_epoch: at an equal epoch only it
  // is accepted. 0: not recorded (a fresh replica, or an older target).
  uint64_t epoch_owner = 0;
  // Activity log: one bit per `activity_extent_size` bytes (a power of two
  // >= block_size and >= dirty_region_size; 0: no log), set before a write
  // to the extent reaches the disk and cleared lazily once the extent's
  // writes are flushed. Laid out like dirty_map; stored after it in the slot.
  uint32_t activity_extent_size = 0;
  std::vector<uint8_t> activity_map;  // ceil(size / activity_extent_size / 8) bytes

  bool operator==(const ReplicaMetadata&) const = default;
};

inline constexpr size_t kMaxGenerationHistory = 8;

// Serialises `md` into one slot image of exactly `slot_size` bytes with
// sequence number `seq` (crc included). INVALID_ARGUMENT if it does not fit or a
// field is out of range. Exposed for tests and the fuzzer.
Status EncodeMetadataSlot(const ReplicaMetadata& md, uint64_t seq, size_t slot_size,
                          std::string* out);
// The same into out[0, slot_size) (a caller's buffer, e.g. aligned for
// O_DIRECT); out is untouched on error.
Status EncodeMetadataSlotTo(const ReplicaMetadata& md, uint64_t seq, size_t slot_size,
                            uint8_t* out);
// Parses a slot image; DATA_LOSS on bad magic/crc/lengths. Never reads outside
// [data, data + n). Accepts format versions 1 to 4 (kMetadataFormatVersion);
// the encoder always writes the current version.
inline constexpr uint32_t kMetadataFormatVersion = 4;
Status DecodeMetadataSlot(const void* data, size_t n, ReplicaMetadata* md, uint64_t* seq);

// Bytes one slot needs for metadata of a volume of `size` bytes with the given
// dirty region and activity extent sizes (4 KiB header plus both bitmaps,
// rounded up to 4 KiB).
size_t MetadataSlotSize(uint64_t size, uint32_t dirty_region_size,
                        uint32_t activity_extent_size = 0);

class MetadataFile {
 public:
  // Creates `path` (must not exist: ALREADY_EXISTS) holding `md` in slot 0 and
  // fsyncs the file and its directory.
  static Result<std::unique_ptr<MetadataFile>> Create(const std::string& path,
                                                      const ReplicaMetadata& md);
  // Loads the newest valid slot. NOT_FOUND if the file is missing, DATA_LOSS if
  // neither slot is valid. Logs a WARNING when one slot was bad.
  static Result<std::unique_ptr<MetadataFile>> Open(const std::string& path);

  const ReplicaMetadata& current() const { return current_; }
  uint64_t sequence() const { return seq_; }

  // Durably replaces the record (other slot, then fdatasync). On error the
  // in-memory record is unchanged and the previous on-disk record still valid.
  // REQUIRES: md.size, md.dirty_region_size and md.activity_extent_size equal
  // the current ones (they fix the slot size).
  Status Update(const ReplicaMetadata& md);

  // In-place edits without copying the record (the dirty map may be large):
  // the caller changes fields of *mutable_current() (never size,
  // dirty_region_size or activity_extent_size) and then calls Sync(). Between the two, and after a
  // failed Sync(), the in-memory record is ahead of the disk.
  ReplicaMetadata* mutable_current() { return &current_; }
  // Durably writes current() (other slot, then fdatasync), like Update(current()).
  Status Sync();

  // Replaces the whole file with one holding `md` (a new size, dirty map and
  // activity map, hence possibly a new slot size) in slot 0 with the next
  // sequence number: written to <path>.tmp, fsynced, renamed over the file,
  // directory fsynced (common/file_util.h), so a crash leaves the old file
  // or the new one. The descriptor is reopened; any other handle on the old
  // file (an O_DIRECT one) must be reopened by its owner. On error the
  // in-memory record is unchanged. REQUIRES: md.dirty_region_size and
  // md.activity_extent_size equal the current ones.
  Status Replace(const ReplicaMetadata& md);

  // The same update split for a caller that does the I/O itself (the replica
  // server, asynchronously through its StorageBackend): EncodeNext() encodes
  // current() with the next sequence number into buf[0, slot_size()) for the
  // file offset next_slot_offset(); once that image is durable on disk,
  // CommitNext() makes it the current slot. Nothing else may write the file
  // in between (Update/Sync would pick the same slot).
  size_t slot_size() const { return slot_size_; }
  const std::string& path() const { return path_; }
  uint64_t next_slot_offset() const { return uint64_t(1 - current_slot_) * slot_size_; }
  Status EncodeNext(uint8_t* buf) const;
  void CommitNext();

 private:
  MetadataFile(std::string path, UniqueFd fd, size_t slot_size, ReplicaMetadata md, uint64_t seq,
               int current_slot);
  // Writes `md` to the slot not holding the current record and fdatasyncs;
  // on success advances the sequence and the current slot.
  Status WriteNextSlot(const ReplicaMetadata& md);

  std::string path_;
  UniqueFd fd_;
  size_t slot_size_;
  ReplicaMetadata current_;
  uint64_t seq_;
  int current_slot_;
};

}  // namespace tandem::replica

#pragma once
// Replica: one volume's copy on this node: a data file (sparse) or block device,
// opened for direct I/O through a StorageBackend, plus its MetadataFile.
//
// Directory layout (one directory per replica, named after the volume id):
//   <dir>/meta   the MetadataFile
//   <dir>/data   the sparse data file (absent when data_path names a device)
//
// Thread-safety: metadata changes (SetHighestEpoch, SetGeneration, the dirty
// map, Close) must be serialised by the caller (the replica server does them
// on its loop thread); fd() may be used from the backend's thread. metadata()
// is for that same thread only. Any other thread (gRPC handlers, the
// manager) reads summary(): a copy of the durable state, published under a
// small lock at every durable metadata update (never per I/O).
//
// Dirty map (docs/replica_metadata.md): one bit per dirty_region_size bytes,
// held once, in the metadata record (no second copy in memory). While
// tracking_dirty() every write is marked before it is submitted: NoteWrite()
// sets the bits in memory and says whether they are already durable; if not,
// SyncDirty() must succeed before the write may reach the disk. Bits set in
// memory but not yet persisted are harmless (a superset of the truth only
// makes a rebuild copy more); what must never happen is a write reaching the
// disk before its bit does.
//
// Activity log (docs/replica_metadata.md): one bit per activity_extent_size
// bytes, held in the metadata record like the dirty map. NoteWrite() also
// sets the bits of the extents a write touches (the same rule: durable before
// the write reaches the disk; they ride the same persist), and counts the
// write in flight until NoteWriteDone(). NoteFlushReceived() /
// NoteFlushDone() track completed FLUSHes; RetireActivity() clears, in
// memory, the bits of extents whose every write completed before a FLUSH was
// received that has completed at least `delay` ago (and none arrived since);
// the cleared bits reach the disk with the next persist (a stale set bit only
// costs a resync). Bits found at Open are kept (sticky) until a
// SET_GENERATION raises the generation above the one held at Open: they name
// extents that may differ from the peers, and only the target knows when they
// have been resynced. A clean Close() keeps every bit (a write this replica
// has may be missing on a peer that stopped first). The per-extent
// state is allocated at Open; nothing is allocated per write.
//
// Asynchronous persist (the replica server's first-touch path): instead of
// SyncDirty(), the server may StartPersist() — one O_DIRECT write of the next
// metadata slot with FUA, queued on its StorageBackend, durable when it
// completes (like pwrite + fdatasync, without blocking the loop) — and hand
// the completion to FinishPersist(). Writes parked by NoteWrite() remember
// dirty_seq() and are released once dirty_durable(seq) (or failed once
// dirty_failed(seq)). While a persist is in flight every synchronous metadata
// update (SetHighestEpoch, SetGeneration, SetRebuildCursor, the dirty-map
// calls, Close) returns UNAVAILABLE without changing anything: both would
// write the same slot; the server defers them until FinishPersist().

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "replica-engine/backend/storage_backend.h"
#include "replica-engine/replica/replica_metadata.h"

namespace tandem::replica {

// A byte range of the replica's data.
struct DataExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct ReplicaConfig {
  std::string volume_id;   // [A-Za-z0-9._-]{1,128}, not "." or ".."
  std::string replica_id;  // same character set
  uint64_t size = 0;       // > 0, multiple of block_size
  uint32_t block_size = 4096;
  uint32_t dirty_region_size = 64 * 1024;  // power of two >= block_size
  // Activity log extent (docs/replica_metadata.md): 0 (no log) or a power of
  // two >= block_size; raised to dirty_region_size when smaller.
  uint32_t activity_extent_size = 4u << 20;
  // Empty: a sparse file <dir>/data of `size` bytes. Otherwise an existing block
  // device or file of at least `size` bytes.
  std::string data_path;
  // The volume's data-protocol secret (docs/protocol.md, CHALLENGE), or
  // empty: none. Kept in <dir>/secret (0600), written before the metadata so
  // a replica never exists without the secret it was created with. Never
  // logged.
  std::string secret;
};

// INVALID_ARGUMENT naming the field when an id is empty, too long, or has a
// character outside [A-Za-z0-9._-].
Status ValidateId(const char* field, const std::string& id);

// What other threads may know about a replica (Replica::summary()): the
// identity and the scalar fields of the last durable metadata record.
struct ReplicaSummary {
  std::string volume_id;
  std::string replica_id;
  std::string data_path;  // as recorded: empty means <dir>/data
  std::string dir;
  uint64_t size = 0;
  uint32_t block_size = 0;
  uint32_t dirty_region_size = 0;
  uint64_t generation = 0;
  uint64_t generation_id = 0;
  uint64_t highest_epoch = 0;
  uint64_t epoch_owner = 0;
  bool tracking_dirty = false;
  uint64_t dirty_since_generation = 0;
  uint64_t rebuild_cursor = 0;
  uint64_t rebuild_generation = 0;
  bool was_clean = false;  // the previous run ended with Close()
  bool closed = false;
  // The data file or device actually used.
  std::string resolved_data_path() const { return data_path.empty() ? dir + "/data" : data_path; }
};

class Replica {
 public:
  // Creates `dir` (its parent must exist), the data file and the metadata
  // (generation 0, epoch 0). ALREADY_EXISTS if `dir` already holds a replica.
  // On failure nothing is left behind.
  static Result<std::unique_ptr<Replica>> Create(backend::StorageBackend* backend,
                                                 const std::string& dir,
                                                 const ReplicaConfig& config);
  // Opens an existing replica and persists clean_shutdown = false, so a crash
  // before Close() is visible at the next Open (was_clean()).
  static Result<std::unique_ptr<Replica>> Open(backend::StorageBackend* backend,
                                               const std::string& dir);
  // Closes without Close(): the replica stays marked unclean on disk.
  ~Replica();

  // Flushes the data file and persists clean_shutdown = true.
  Status Close();

  int fd() const { return fd_; }
  // The metadata owner's view (see Thread-safety above).
  const ReplicaMetadata& metadata() const { return meta_->current(); }
  // Any thread: a copy of the last durable state.
  ReplicaSummary summary() const;
  // Any thread: fixed at creation.
  const std::string& volume_id() const { return volume_id_; }
  const std::string& dir() const { return dir_; }
  // Whether the previous run ended with Close().
  bool was_clean() const { return was_clean_; }
  // ReplicaConfig::secret as created (read at Open); empty: none.
  const std::string& secret() const { return secret_; }

  // Durable metadata updates (one fdatasync each).
  // Persists the highest accepted epoch and the target that holds it
  // (epoch_owner) together.
  Status SetHighestEpoch(uint64_t epoch, uint64_t owner);
  // Same, keeping the current owner.
  Status SetHighestEpoch(uint64_t epoch) { return SetHighestEpoch(epoch, epoch_owner()); }
  uint64_t epoch_owner() const { return meta_->current().epoch_owner; }

  // Generations only grow: FAILED_PRECONDITION if `generation` is lower than
  // the current one; equal is OK (idempotent). Persists generation, its id
  // and history and the tracking flag together. INVALID_ARGUMENT when
  // tracking is asked of a replica without a dirty map (dirty_region_size 0).
  // Turning tracking on sets dirty_since_generation to `generation`; keeping
  // it on keeps it; turning it off sets it to 0 (the map itself is kept).
  //
  // With a generation id (the target's record): exactly `generation_id` and
  // `history` are persisted (INVALID_ARGUMENT if the id is 0, the history is
  // longer than kMaxGenerationHistory or holds a 0).
  Status SetGeneration(uint64_t generation, bool track_dirty, uint64_t generation_id,
                       const std::vector<uint64_t>& history);
  // Without one (an older target): when the number grows the replica draws a
  // random non-zero id itself and pushes the previous id (if any) on the
  // front of the history (keeping the newest kMaxGenerationHistory); an equal
  // number keeps the id.
  Status SetGeneration(uint64_t generation, bool track_dirty);
  // Same, keeping the current tracking flag.
  Status SetGeneration(uint64_t generation) { return SetGeneration(generation, tracking_dirty()); }
  uint64_t generation_id() const { return meta_->current().generation_id; }
  const std::vector<uint64_t>& generation_history() const {
    return meta_->current().generation_history;
  }

  // Grows the replica to `new_size` bytes: the data file is extended (sparse;
  // a device or a file named by data_path must already hold it) and synced
  // first, then the metadata is replaced with the new size and dirty map and
  // activity log grown (new regions clean) in one crash-safe file
  // replacement (MetadataFile::Replace), so a crash leaves the old size or
  // the new one, never a record larger than its data. The same size is OK
  // (nothing done). INVALID_ARGUMENT unless a positive multiple of
  // block_size; OUT_OF_RANGE when smaller (a replica never shrinks) or when
  // the device or data_path file is too small; UNAVAILABLE while an
  // asynchronous persist is in flight. Blocks for a few fsyncs: the caller's
  // thread is the metadata owner's (the server runs it on its loop, once per
  // expansion).
  Status Resize(uint64_t new_size);

  // The allocated (data) extents of the data file within [offset, offset +
  // length), in order, clipped to the range and rounded out to block_size
  // (adjacent ones merged): at most `max` of them into out[0, *count).
  // *covered_end is offset + length when the list is complete, else the end
  // of the last extent returned (the caller continues from there). Found with
  // lseek(SEEK_DATA/SEEK_HOLE) (2 syscalls per extent, on the caller's
  // thread); a block device, or a file system without SEEK_DATA, reports the
  // whole range as one extent. Holes read as zeroes. REQUIRES: a valid range
  // (within the replica, length > 0), max > 0.
  Status FindAllocated(uint64_t offset, uint64_t length, DataExtent* out, uint32_t max,
                       uint32_t* count, uint64_t* covered_end) const;

  // The rebuild checkpoint (SET_REBUILD_CURSOR): persisted before returning.
  // OUT_OF_RANGE if cursor > size (nothing changed). cursor 0 clears it (and
  // the generation recorded with it).
  Status SetRebuildCursor(uint64_t cursor, uint64_t generation);

  // Dirty map. Ranges are bytes; [offset, offset + length) must lie within
  // the replica (INVALID_ARGUMENT / OUT_OF_RANGE otherwise, nothing changed).
  bool tracking_dirty() const { return meta_->current().tracking_dirty; }
  uint64_t dirty_since_generation() const { return meta_->current().dirty_since_generation; }
  uint64_t rebuild_cursor() const { return meta_->current().rebuild_cursor; }
  uint64_t rebuild_generation() const { return meta_->current().rebuild_generation; }
  uint32_t dirty_region_size() const { return meta_->current().dirty_region_size; }
  const std::vector<uint8_t>& dirty_map() const { return meta_->current().dirty_map; }
  // Whether region `region` (index, not bytes) is dirty in memory.
  bool IsRegionDirty(uint64_t region) const;
  // Data path (no I/O, no allocation), for every WRITE/TRIM/WRITE_ZEROES when
  // it is received: while tracking_dirty() marks every region overlapping the
  // range in memory, and with an activity log marks its extents and counts
  // the write in flight there (NoteWriteDone() must follow, once, whatever
  // becomes of the write). True when the write may be submitted at once,
  // i.e. every bit it needs was already on disk; false when a persist
  // (SyncDirty() or StartPersist()) must succeed first. REQUIRES: a valid
  // range, length > 0.
  bool NoteWrite(uint64_t offset, uint64_t length);
  // The write noted with these bounds completed (or failed, or was dropped).
  void NoteWriteDone(uint64_t offset, uint64_t length);
  // A FLUSH was received (before it is submitted); pass the value returned
  // to NoteFlushDone() when it completed successfully, at `now_ns`
  // (MonotonicNanos()).
  uint64_t NoteFlushReceived();
  void NoteFlushDone(uint64_t flush_seq, uint64_t now_ns);
  // Clears in memory the bits of the extents that may retire (see the top of
  // this file), using FLUSHes completed at least `delay_ns` before `now_ns`.
  // Returns how many were cleared. Cheap when nothing is set: one pass over
  // the map bytes.
  uint64_t RetireActivity(uint64_t now_ns, uint64_t delay_ns);
  // Bits cleared in memory that the disk still has set.
  bool activity_clear_pending() const { return clear_durable_ < clear_seq_; }
  uint32_t activity_extent_size() const { return meta_->current().activity_extent_size; }
  const std::vector<uint8_t>& activity_map() const { return meta_->current().activity_map; }
  // Extents marked in the activity log (in memory).
  uint64_t activity_count() const;
  // Persists the in-memory dirty map if it is ahead of the disk (one metadata
  // update, however many NoteWrite()s it covers); OK at once otherwise.
  Status SyncDirty();
  // Whether the in-memory dirty map has bits the disk does not have yet.
  bool dirty_unsynced() const { return dirty_unsynced_; }

  // Asynchronous persist (see the top of this file). False when the meta
  // file could not be opened for O_DIRECT (then only SyncDirty() persists).
  bool can_persist_async() const { return direct_meta_fd_ >= 0; }
  bool persist_in_flight() const { return persist_in_flight_; }
  // Grows with every NoteWrite() and dirty-map call that changes a bit (and
  // after a failed persist); a write parked now needs a persist covering this value.
  uint64_t dirty_seq() const { return change_seq_; }
  // Every bit set up to `seq` is on disk.
  bool dirty_durable(uint64_t seq) const { return durable_seq_ >= seq; }
  // The persist that was to cover `seq` failed (and nothing later covered it):
  // a write parked at `seq` must fail without reaching the disk.
  bool dirty_failed(uint64_t seq) const { return seq <= failed_seq_ && durable_seq_ < seq; }
  // Encodes the record into the next slot and queues its write (kWrite with
  // kFlagFua on the O_DIRECT meta fd) on `backend`; `done(req)` runs from
  // backend->Reap() with req->ctx == ctx and must call FinishPersist(req->result).
  // REQUIRES: can_persist_async(), !persist_in_flight(), the caller owns
  // `backend`'s thread and keeps this replica alive until `done` ran.
  Status StartPersist(backend::StorageBackend* backend, backend::IoDoneFn done, void* ctx);
  // The request StartPersist() queued (to recognise its completion).
  const backend::IoRequest* persist_request() const { return &persist_req_; }
  // Completes the persist: `result` is the write's (bytes or -errno). OK:
  // the slot is now the current one and dirty_durable() covers every bit set
  // before StartPersist(). Otherwise IO_ERROR, dirty_failed() covers them and
  // the disk keeps the previous record (a later persist retries).
  Status FinishPersist(int32_t result);
  // Marks every region overlapping the range and persists (if anything is
  // not yet durable). length 0 is INVALID_ARGUMENT.
  Status MarkDirty(uint64_t offset, uint64_t length);
  // MARK_DIRTY / CLEAR_DIRTY without the persist (the replica server's
  // asynchronous path; allowed while a persist is in flight): the change is
  // made in memory only, with the argument checks of MarkDirty()/ClearDirty()
  // (nothing changed on error; FAILED_PRECONDITION once closed). True when
  // the state asked for is already durable; false when the caller must wait,
  // like a parked write, for dirty_durable(dirty_seq()) (read right after this
  // call; or dirty_failed()). Any number of such changes share one persist
  // (StartPersist(), or SyncDirty() without an O_DIRECT handle). A clear
  // takes effect in memory at once: a write noted after it sets the bit
  // again and needs a later persist, so a region re-dirtied meanwhile stays
  // dirty on disk.
  Result<bool> NoteMarkDirty(uint64_t offset, uint64_t length);
  Result<bool> NoteClearDirty(uint64_t offset, uint64_t length);
  // Clears the regions of the range and persists. offset must be a multiple
  // of dirty_region_size and the range must end on a region boundary or at
  // the replica's end (INVALID_ARGUMENT), so no partly-copied region is
  // cleared. length 0 is INVALID_ARGUMENT.
  Status ClearDirty(uint64_t offset, uint64_t length);

 private:
  Replica(backend::StorageBackend* backend, std::string dir, int fd,
          std::unique_ptr<MetadataFile> meta, bool was_clean, int direct_meta_fd);
  // UNAVAILABLE while an asynchronous persist is in flight, FAILED_PRECONDITION
  // once closed.
  Status CheckCanUpdate() const;
  // meta_->Sync() that, on success, notes every in-memory dirty bit durable.
  Status SyncRecord();
  Status CheckRange(uint64_t offset, uint64_t length) const;
  // Sets (or clears) the bits of regions [first, last]; true if any changed.
  bool SetRegions(uint64_t first, uint64_t last, bool dirty);
  // Update() wrapper that notes the in-memory map is durable on success.
  Status UpdateMetadata(const ReplicaMetadata& md);
  // The common part of both SetGeneration()s.
  Status ApplyGeneration(uint64_t generation, bool track_dirty, uint64_t generation_id,
                         std::vector<uint64_t> history);
  // Sizes the per-extent activity state (at Create/Open).
  void InitActivity();
  // Notes that a persist encoded now will make every change so far durable.
  void NoteRecordDurable();
  // Copies the record's scalars into summary_ (after a durable update).
  void PublishSummary();

  backend::StorageBackend* backend_;
  std::string dir_;
  std::string secret_;
  const std::string volume_id_;  // never changes: readable from any thread
  int fd_;
  std::unique_ptr<MetadataFile> meta_;
  bool was_clean_;
  bool closed_ = false;
  // The in-memory dirty map has bits the disk does not (yet) have.
  bool dirty_unsynced_ = false;

  // Asynchronous persist state (the server's loop thread only).
  int direct_meta_fd_;  // the meta file opened through backend_, O_DIRECT; -1: none
  std::unique_ptr<uint8_t, void (*)(void*)> persist_buf_{nullptr, &std::free};  // slot image
  backend::IoRequest persist_req_;
  bool persist_in_flight_ = false;
  uint64_t change_seq_ = 0;
  uint64_t durable_seq_ = 0;
  uint64_t failed_seq_ = 0;
  uint64_t persist_covers_ = 0;  // change_seq_ when the in-flight persist was encoded

  // Activity log state (loop thread only), one entry per extent, allocated at
  // Open. inflight: writes noted and not done. quiesced: activity_seq_ when
  // inflight last dropped to 0 (0: never, this run). sticky: bits found at
  // Open, kept until the generation moves past open_generation_.
  std::vector<uint32_t> al_inflight_;
  std::vector<uint64_t> al_quiesced_;
  std::vector<uint8_t> al_sticky_;
  bool any_sticky_ = false;
  uint64_t open_generation_ = 0;
  uint64_t activity_seq_ = 0;  // orders write completions and FLUSH receipts
  // Completed FLUSHes not yet old enough to retire with: (completion time,
  // highest receipt seq so far), oldest first, in a fixed ring.
  static constexpr size_t kFlushRing = 64;
  struct FlushDone {
    uint64_t done_ns = 0;
    uint64_t upto = 0;
  };
  FlushDone flush_ring_[kFlushRing];
  size_t flush_head_ = 0;
  size_t flush_count_ = 0;
  uint64_t flush_max_ = 0;    // highest receipt seq of any completed FLUSH
  uint64_t retire_upto_ = 0;  // extents quiesced before this seq may retire
  uint64_t clear_seq_ = 0;    // grows with every RetireActivity() that cleared bits
  uint64_t clear_durable_ = 0;
  uint64_t persist_clears_ = 0;  // clear_seq_ when the in-flight persist was encoded

  mutable Mutex summary_mu_;
  ReplicaSummary summary_ GUARDED_BY(summary_mu_);
};

}  // namespace tandem::replica

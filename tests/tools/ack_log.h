#pragma once
// The acknowledged-write log of tests/tools/ack_verifier.
//
// A text file, one record per line, appended by every `write` run:
//
//   # tandem ack_verifier log v1
//   R <run> <writer_id hex> <block_size> <region_offset> <region_length>
//   A <offset> <seq>            a write the NBD server acknowledged
//   F <offset> <seq> <errno>    a write that failed (its block is undefined)
//   M <seq>                     fence mark: a newer target took over the volume
//                               before this run issued write <seq>
//
// Writes of a run issued at or after its fence mark went to a target that
// had been superseded: acknowledging any of them is a bug (a "fenced ack",
// counted in fenced_acked). Their blocks are judged like failed writes (old
// or new content accepted), so a fenced ack is reported once, as such, and
// not again as a lost write.
//
// Run r numbers its writes (r << kRunSeqShift) + 1, + 2, ..., so sequence
// numbers grow strictly across every run appended to one log and "older than
// the newest acknowledged write" is well defined per offset. A writer that
// dies mid-line leaves a torn last line; parsing ignores it and the next
// writer truncates it before appending.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "common/status.h"

namespace tandem::testtools {

constexpr int kRunSeqShift = 40;

struct AckLogRun {
  uint32_t run = 0;
  uint64_t writer_id = 0;
  uint32_t block_size = 0;
  uint64_t region_offset = 0;
  uint64_t region_length = 0;
};

struct AckLogContents {
  std::vector<AckLogRun> runs;
  std::unordered_map<uint64_t, uint64_t> newest_acked;   // offset -> newest acked seq
  std::unordered_map<uint64_t, uint64_t> newest_failed;  // offset -> newest failed seq
  uint64_t acked = 0;
  uint64_t failed = 0;
  uint64_t fenced_acked = 0;  // acks of writes issued after their run's fence mark
  uint64_t fence_marks = 0;
  bool torn_tail = false;  // the last line had no newline and was ignored
};

// Parses a whole log. DATA_LOSS naming the line on a malformed record (other
// than a torn last line), a record before the first run header, or runs of
// different block sizes.
Result<AckLogContents> ParseAckLog(std::string_view text);

// Reads and parses the log at `path`; NOT_FOUND when it does not exist.
Result<AckLogContents> ReadAckLog(const std::string& path);

// Appends one run to a log. Records are buffered; Sync() makes everything
// appended so far durable (fflush + fdatasync). Not thread-safe.
class AckLogWriter {
 public:
  // Opens `path` for appending (creating it), drops a torn last line and
  // writes the header of run (number of runs already in the log) + 1.
  static Result<std::unique_ptr<AckLogWriter>> Open(const std::string& path, uint64_t writer_id,
                                                    uint32_t block_size, uint64_t region_offset,
                                                    uint64_t region_length);
  ~AckLogWriter();
  AckLogWriter(const AckLogWriter&) = delete;
  AckLogWriter& operator=(const AckLogWriter&) = delete;

  uint32_t run() const { return run_; }
  // The first sequence number of this run is seq_base() + 1.
  uint64_t seq_base() const { return static_cast<uint64_t>(run_) << kRunSeqShift; }

  void Acked(uint64_t offset, uint64_t seq);
  void Failed(uint64_t offset, uint64_t seq, int error);
  // Records a fence mark: writes of this run from `next_seq` on were issued
  // after a newer target took over. Syncs the log.
  Status Fence(uint64_t next_seq);
  Status Sync();
  // Syncs and closes; further calls are ignored.
  Status Close();

 private:
  AckLogWriter(FILE* file, uint32_t run) : file_(file), run_(run) {}

  FILE* file_;
  uint32_t run_;
};

}  // namespace tandem::testtools

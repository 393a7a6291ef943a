// ack_verifier: the acknowledged-write verifier. Writes stamped blocks
// (tests/tools/ack_stamp.h) through an NBD export at a fixed queue depth, logs
// every write the server acknowledged (tests/tools/ack_log.h), and later reads
// every block back to report acknowledged writes that are missing or older
// (LOST) and blocks that are torn or misplaced (CORRUPT).
//
//   ack_verifier write  --uri=nbd+unix:///vol?socket=/run/vol.sock --log=/var/tmp/acks.log
//                       [--blocks=N] [--block-size=4096]
//                       [--seconds=S | --ops=N | --until-stopped] [--qd=16]
//                       [--seed=X] [--region=OFF:LEN] [--allow-errors] [--fua]
//                       [--verify-after-write]
//   ack_verifier verify --uri=... --log=FILE
//   ack_verifier verify --file=PATH --log=FILE   (a replica's data file, read directly)
//
// A writer stops on SIGINT/SIGTERM (in-flight writes are completed and
// logged first); --until-stopped writes until then, reconnecting for as long
// as it takes with --allow-errors. SIGUSR1 writes a fence mark into the log
// (tests/tools/ack_log.h): the volume was taken over by a newer target, so
// every write this run acknowledges from then on is a "fenced ack" (a bug);
// the writer counts them (fenced_acked=; fenced_failed= counts the ones that
// failed, as they should) and verify reports them.
//
// Exit status: 0 success; 1 lost or corrupt blocks, fenced acks, write errors
// (without --allow-errors) or stalled I/O; 2 bad usage or no connection.
//
// Two writes to one block are never in flight together: the server may apply
// concurrent writes in any order, which would make "newest acknowledged"
// ambiguous.

#include <fcntl.h>
#include <libnbd.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/flags.h"
#include "common/result.h"
#include "common/status.h"
#include "tests/tools/ack_log.h"
#include "tests/tools/ack_stamp.h"

namespace tandem::testtools {
namespace {

constexpr uint64_t kMsToNs = 1000000ull;
constexpr uint64_t kLogSyncIntervalNs = 1000 * kMsToNs;
constexpr uint64_t kMaxReportedProblems = 20;

volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_fence = 0;
void OnSignal(int) { g_stop = 1; }
void OnFenceSignal(int) { g_fence = 1; }

struct NbdCloser {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};
using NbdPtr = std::unique_ptr<nbd_handle, NbdCloser>;

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

Result<NbdPtr> Connect(const std::string& uri) {
  NbdPtr h(nbd_create());
  if (!h) return Status::Internal(std::string("nbd_create: ") + nbd_get_error());
  if (nbd_connect_uri(h.get(), uri.c_str()) == -1) {
    return Status::Unavailable("connect " + uri + ": " + nbd_get_error());
  }
  return h;
}

Result<AlignedBuffer> AllocBuffer(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, bytes) != 0) return Status::ResourceExhausted("posix_memalign");
  std::memset(p, 0, bytes);
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

struct Options {
  std::string uri;
  std::string log;
  uint64_t blocks = 0;
  uint64_t block_size = 4096;
  uint64_t seconds = 0;
  uint64_t ops = 0;
  bool until_stopped = false;
  std::string file;
  uint64_t qd = 16;
  uint64_t seed = 0;
  bool seed_set = false;
  bool region_set = false;
  uint64_t region_offset = 0;
  uint64_t region_length = 0;
  uint64_t io_timeout_ms = 30000;
  bool allow_errors = false;
  bool fua = false;
  bool verify_after_write = false;
};

Status ParseRegion(const std::string& text, uint64_t* offset, uint64_t* length) {
  size_t colon = text.find(':');
  if (colon == std::string::npos) return Status::InvalidArgument("--region must be OFF:LEN");
  Status st = ParseSize(text.substr(0, colon), offset);
  if (st.ok()) st = ParseSize(text.substr(colon + 1), length);
  return st.WithContext("--region");
}

// One outstanding command: its buffer and what it was for.
struct Slot {
  AlignedBuffer buf;
  uint64_t offset = 0;
  uint64_t seq = 0;
  int error = 0;
  std::vector<Slot*>* completed = nullptr;
};

int OnCommandDone(void* user_data, int* error) {
  Slot* slot = static_cast<Slot*>(user_data);
  slot->error = *error;
  slot->completed->push_back(slot);
  return 1;  // retire the command; its result is in the slot
}

// ---------------------------------------------------------------------------
// write

class Writer {
 public:
  Writer(const Options& opts, uint64_t region_offset, uint64_t blocks)
      : opts_(opts), region_offset_(region_offset), blocks_(blocks), in_flight_(blocks, 0) {}

  // Returns 0/1 as the process exit status; 2 on setup errors.
  int Run(NbdPtr handle) {
    handle_ = std::move(handle);
    std::random_device rd;
    uint64_t seed = opts_.seed_set ? opts_.seed : (static_cast<uint64_t>(rd()) << 32) ^ rd();
    rng_.seed(seed);
    uint64_t writer_id = rng_();
    auto log = AckLogWriter::Open(opts_.log, writer_id, static_cast<uint32_t>(opts_.block_size),
                                  region_offset_, blocks_ * opts_.block_size);
    if (!log.ok()) return Fail(log.status(), 2);
    log_ = std::move(*log);
    writer_id_ = writer_id;
    next_seq_ = log_->seq_base() + 1;

    slots_.resize(opts_.qd);
    completed_.reserve(opts_.qd);
    for (Slot& s : slots_) {
      auto buf = AllocBuffer(opts_.block_size);
      if (!buf.ok()) return Fail(buf.status(), 2);
      s.buf = std::move(*buf);
      s.completed = &completed_;
      free_.push_back(&s);
    }

    const uint64_t start = MonotonicNanos();
    const uint64_t deadline = opts_.seconds ? start + opts_.seconds * 1000000000ull : UINT64_MAX;
    uint64_t last_progress = start, last_sync = start;
    bool stalled = false;
    for (;;) {
      if (g_fence) {
        g_fence = 0;
        if (fence_seq_ == UINT64_MAX) fence_seq_ = next_seq_;
        Status fst = log_->Fence(next_seq_);
        if (!fst.ok()) return Fail(fst, 1);
        std::fprintf(stderr, "ack_verifier: fence mark at seq %" PRIu64 "\n", next_seq_);
      }
      uint64_t now = MonotonicNanos();
      bool stopping = g_stop || now >= deadline || (opts_.ops && issued_ >= opts_.ops) ||
                      (failed_ > 0 && !opts_.allow_errors) || !handle_;
      while (!stopping && !free_.empty() && !(opts_.ops && issued_ >= opts_.ops)) {
        if (!Issue()) break;
      }
      if (free_.size() == slots_.size()) {
        if (stopping) break;
        if (!handle_ || nbd_aio_is_dead(handle_.get()) || nbd_aio_is_closed(handle_.get())) {
          if (!Reconnect(deadline)) break;
        }
        continue;
      }
      int r = nbd_poll(handle_.get(), 100);
      (void)r;  // -1 on a dead connection: its commands complete with an error below
      now = MonotonicNanos();
      if (!completed_.empty()) last_progress = now;
      Reap();
      if (free_.size() != slots_.size() && now - last_progress > opts_.io_timeout_ms * kMsToNs) {
        std::fprintf(stderr,
                     "ack_verifier: no write completed for %" PRIu64 " ms (%zu in flight)\n",
                     opts_.io_timeout_ms, slots_.size() - free_.size());
        stalled = true;
        break;
      }
      if (now - last_sync > kLogSyncIntervalNs) {
        Status st = log_->Sync();
        if (!st.ok()) return Fail(st, 1);
        last_sync = now;
      }
    }
    Status st = log_->Close();
    if (!st.ok()) return Fail(st, 1);
    double secs = static_cast<double>(MonotonicNanos() - start) / 1e9;
    std::printf("write: run=%u writer=%" PRIx64 " acked=%" PRIu64 " failed=%" PRIu64
                " seconds=%.2f iops=%.0f fenced_acked=%" PRIu64 " fenced_failed=%" PRIu64 "%s\n",
                log_->run(), writer_id_, acked_, failed_, secs,
                secs > 0 ? static_cast<double>(acked_) / secs : 0.0, fenced_acked_, fenced_failed_,
                stalled ? " STALLED" : "");
    std::fflush(stdout);
    if (stalled || fenced_acked_ > 0) return 1;
    if (failed_ > 0 && !opts_.allow_errors) return 1;
    return 0;
  }

 private:
  int Fail(const Status& st, int code) {
    std::fprintf(stderr, "ack_verifier: %s\n", st.ToString().c_str());
    return code;
  }

  // Picks a block with no write in flight (linear probe from a random one).
  uint64_t PickBlock() {
    uint64_t b = rng_() % blocks_;
    while (in_flight_[b]) b = (b + 1) % blocks_;
    return b;
  }

  // Starts one write; false when the connection cannot take it.
  bool Issue() {
    Slot* slot = free_.back();
    uint64_t block = PickBlock();
    slot->offset = region_offset_ + block * opts_.block_size;
    slot->seq = next_seq_++;
    slot->error = 0;
    EncodeStampedBlock(Stamp{slot->offset, slot->seq, writer_id_}, slot->buf.get(),
                       opts_.block_size);
    uint32_t flags = opts_.fua ? LIBNBD_CMD_FLAG_FUA : 0;
    int64_t cookie = nbd_aio_pwrite(handle_.get(), slot->buf.get(), opts_.block_size, slot->offset,
                                    nbd_completion_callback{OnCommandDone, slot, nullptr}, flags);
    ++issued_;
    if (cookie == -1) {
      // Never sent, so it cannot have landed; logged as failed all the same.
      int err = nbd_get_errno();
      log_->Failed(slot->offset, slot->seq, err ? err : EIO);
      ReportError("issue", slot, err);
      return false;
    }
    free_.pop_back();
    in_flight_[block] = 1;
    return true;
  }

  void Reap() {
    for (Slot* slot : completed_) {
      in_flight_[(slot->offset - region_offset_) / opts_.block_size] = 0;
      if (slot->error == 0) {
        log_->Acked(slot->offset, slot->seq);
        ++acked_;
        if (slot->seq >= fence_seq_) {
          if (++fenced_acked_ <= kMaxReportedProblems) {
            std::fprintf(stderr,
                         "ack_verifier: FENCED_ACK offset=%" PRIu64 " seq=%" PRIu64
                         " acknowledged after the fence mark\n",
                         slot->offset, slot->seq);
          }
        }
      } else {
        log_->Failed(slot->offset, slot->seq, slot->error);
        ReportError("write", slot, slot->error);
        if (slot->seq >= fence_seq_) ++fenced_failed_;
      }
      free_.push_back(slot);
    }
    completed_.clear();
  }

  void ReportError(const char* what, const Slot* slot, int err) {
    ++failed_;
    if (failed_ <= kMaxReportedProblems) {
      std::fprintf(stderr, "ack_verifier: %s offset=%" PRIu64 " seq=%" PRIu64 " failed: %s\n", what,
                   slot->offset, slot->seq, std::strerror(err ? err : EIO));
    }
  }

  // With --allow-errors a dropped connection is re-established (bounded by
  // --io-timeout-ms, or until a stop signal with --until-stopped); otherwise
  // the run ends.
  bool Reconnect(uint64_t deadline) {
    handle_.reset();
    if (!opts_.allow_errors) return false;
    uint64_t give_up =
        opts_.until_stopped ? UINT64_MAX : MonotonicNanos() + opts_.io_timeout_ms * kMsToNs;
    while (!g_stop && MonotonicNanos() < std::min(give_up, deadline)) {
      auto h = Connect(opts_.uri);
      if (h.ok()) {
        handle_ = std::move(*h);
        std::fprintf(stderr, "ack_verifier: reconnected\n");
        return true;
      }
      usleep(200 * 1000);
    }
    std::fprintf(stderr, "ack_verifier: could not reconnect to %s\n", opts_.uri.c_str());
    return false;
  }

  const Options& opts_;
  const uint64_t region_offset_;
  const uint64_t blocks_;
  std::vector<uint8_t> in_flight_;  // per block: a write is outstanding
  NbdPtr handle_;
  std::unique_ptr<AckLogWriter> log_;
  std::mt19937_64 rng_;
  uint64_t writer_id_ = 0;
  uint64_t next_seq_ = 0;
  std::vector<Slot> slots_;
  std::vector<Slot*> free_;
  std::vector<Slot*> completed_;
  uint64_t issued_ = 0;
  uint64_t acked_ = 0;
  uint64_t failed_ = 0;
  uint64_t fence_seq_ = UINT64_MAX;  // writes from this seq on were issued after the fence mark
  uint64_t fenced_acked_ = 0;
  uint64_t fenced_failed_ = 0;
};

// ---------------------------------------------------------------------------
// verify

struct VerifyCounts {
  uint64_t blocks = 0, ok = 0, lost = 0, corrupt = 0, unwritten = 0, foreign = 0, undefined = 0;
};

// Classifies one block read back at `offset` against the log.
void CheckBlock(const AckLogContents& log, uint64_t offset, const uint8_t* block, size_t bs,
                VerifyCounts* counts) {
  ++counts->blocks;
  auto a = log.newest_acked.find(offset);
  uint64_t acked = a == log.newest_acked.end() ? 0 : a->second;
  auto f = log.newest_failed.find(offset);
  bool failed_after = f != log.newest_failed.end() && f->second > acked;
  Stamp stamp;
  StampCheck check = DecodeStampedBlock(block, bs, &stamp);
  auto report = [&](const char* kind, const std::string& detail, uint64_t n) {
    if (n <= kMaxReportedProblems) {
      std::printf("%s offset=%" PRIu64 " acked_seq=%" PRIu64 " %s\n", kind, offset, acked,
                  detail.c_str());
    }
  };
  if (check == StampCheck::kOk && stamp.offset != offset) {
    report("CORRUPT", "misplaced: holds the stamp of offset " + std::to_string(stamp.offset),
           ++counts->corrupt);
    return;
  }
  if (check == StampCheck::kOk) {
    if (acked != 0 && stamp.seq < acked) {
      report("LOST", "found_seq=" + std::to_string(stamp.seq) + " (older)", ++counts->lost);
    } else {
      ++counts->ok;
    }
    return;
  }
  if (check == StampCheck::kBadCrc || check == StampCheck::kBadSize) {
    if (failed_after) {
      ++counts->undefined;  // a failed write may leave its block torn (NBD semantics)
    } else {
      report("CORRUPT", StampCheckName(check), ++counts->corrupt);
    }
    return;
  }
  if (acked != 0) {
    report("LOST", std::string("found ") + StampCheckName(check), ++counts->lost);
    return;
  }
  if (check == StampCheck::kUnwritten) {
    ++counts->unwritten;
  } else {
    ++counts->foreign;
  }
}

// Reads every block of `ranges` from the NBD export at opts.uri and checks it.
// Returns 0, or 1/2 (exit status) when the reads could not be done.
int VerifyNbd(const Options& opts, const AckLogContents& log,
              const std::vector<std::pair<uint64_t, uint64_t>>& merged, uint64_t bs,
              VerifyCounts* counts, uint64_t* read_errors) {
  auto conn = Connect(opts.uri);
  if (!conn.ok()) {
    std::fprintf(stderr, "ack_verifier: %s\n", conn.status().ToString().c_str());
    return 2;
  }
  NbdPtr h = std::move(*conn);

  std::vector<Slot> slots(std::max<uint64_t>(opts.qd, 1));
  std::vector<Slot*> free_slots, completed;
  completed.reserve(slots.size());
  for (Slot& s : slots) {
    auto buf = AllocBuffer(bs);
    if (!buf.ok()) return 2;
    s.buf = std::move(*buf);
    s.completed = &completed;
    free_slots.push_back(&s);
  }
  size_t range = 0;
  uint64_t next = merged.empty() ? 0 : merged[0].first;
  uint64_t last_progress = MonotonicNanos();
  for (;;) {
    while (!free_slots.empty() && range < merged.size()) {
      Slot* slot = free_slots.back();
      slot->offset = next;
      slot->error = 0;
      if (nbd_aio_pread(h.get(), slot->buf.get(), bs, next,
                        nbd_completion_callback{OnCommandDone, slot, nullptr}, 0) == -1) {
        std::fprintf(stderr, "ack_verifier: read offset=%" PRIu64 ": %s\n", next, nbd_get_error());
        return 2;
      }
      free_slots.pop_back();
      next += bs;
      if (next >= merged[range].second && ++range < merged.size()) next = merged[range].first;
    }
    if (free_slots.size() == slots.size()) break;
    if (nbd_poll(h.get(), 100) == -1 && nbd_aio_is_dead(h.get())) {
      // Completions with errors follow; keep reaping.
    }
    uint64_t now = MonotonicNanos();
    if (!completed.empty()) last_progress = now;
    for (Slot* slot : completed) {
      if (slot->error != 0) {
        ++*read_errors;
        std::printf("READ_ERROR offset=%" PRIu64 " %s\n", slot->offset, std::strerror(slot->error));
      } else {
        CheckBlock(log, slot->offset, slot->buf.get(), bs, counts);
      }
      free_slots.push_back(slot);
    }
    completed.clear();
    if (nbd_aio_is_dead(h.get()) && free_slots.size() != slots.size()) continue;
    if (now - last_progress > opts.io_timeout_ms * kMsToNs) {
      std::fprintf(stderr, "ack_verifier: no read completed for %" PRIu64 " ms\n",
                   opts.io_timeout_ms);
      return 1;
    }
    if (g_stop) return 1;
  }
  nbd_shutdown(h.get(), 0);
  return 0;
}

// The same over a plain file (a replica's data file): pread, holes read as zeroes.
int VerifyFile(const Options& opts, const AckLogContents& log,
               const std::vector<std::pair<uint64_t, uint64_t>>& merged, uint64_t bs,
               VerifyCounts* counts, uint64_t* read_errors) {
  int fd = ::open(opts.file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "ack_verifier: open %s: %s\n", opts.file.c_str(), std::strerror(errno));
    return 2;
  }
  std::vector<uint8_t> buf(bs);
  for (const auto& [begin, end] : merged) {
    for (uint64_t off = begin; off + bs <= end; off += bs) {
      if (g_stop) {
        ::close(fd);
        return 1;
      }
      size_t got = 0;
      while (got < bs) {
        ssize_t n = ::pread(fd, buf.data() + got, bs - got, static_cast<off_t>(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<size_t>(n);
      }
      if (got < bs) {
        // Past the end of the file: zeroes (a sparse file's tail).
        std::memset(buf.data() + got, 0, bs - got);
      }
      CheckBlock(log, off, buf.data(), bs, counts);
    }
  }
  (void)read_errors;
  ::close(fd);
  return 0;
}

int Verify(const Options& opts) {
  auto log = ReadAckLog(opts.log);
  if (!log.ok()) {
    std::fprintf(stderr, "ack_verifier: %s\n", log.status().ToString().c_str());
    return 2;
  }
  if (log->runs.empty()) {
    std::fprintf(stderr, "ack_verifier: %s has no write run\n", opts.log.c_str());
    return 2;
  }
  const uint64_t bs = log->runs.front().block_size;
  // The union of every run's region, in block order.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const AckLogRun& r : log->runs)
    ranges.emplace_back(r.region_offset, r.region_offset + r.region_length);
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  VerifyCounts counts;
  uint64_t read_errors = 0;
  int rc = opts.file.empty() ? VerifyNbd(opts, *log, merged, bs, &counts, &read_errors)
                             : VerifyFile(opts, *log, merged, bs, &counts, &read_errors);
  if (rc != 0) return rc;
  std::printf("verify: runs=%zu acked_writes=%" PRIu64 " failed_writes=%" PRIu64 " blocks=%" PRIu64
              " ok=%" PRIu64 " lost=%" PRIu64 " corrupt=%" PRIu64 " unwritten=%" PRIu64
              " foreign=%" PRIu64 " undefined=%" PRIu64 " read_errors=%" PRIu64
              " fenced_acks=%" PRIu64 "\n",
              log->runs.size(), log->acked, log->failed, counts.blocks, counts.ok, counts.lost,
              counts.corrupt, counts.unwritten, counts.foreign, counts.undefined, read_errors,
              log->fenced_acked);
  std::fflush(stdout);
  const bool clean =
      counts.lost == 0 && counts.corrupt == 0 && read_errors == 0 && log->fenced_acked == 0;
  return clean ? 0 : 1;
}

int Usage(const Flags& flags, const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "ack_verifier: %s\n", error.c_str());
  std::fprintf(stderr, "usage: ack_verifier write|verify [flags]\n%s",
               flags.Usage("ack_verifier").c_str());
  return 2;
}

int Main(int argc, char** argv) {
  Flags flags;
  flags.Define("uri", "", "NBD URI, e.g. nbd+unix:///vol?socket=/path/vol.sock");
  flags.Define("log", "", "acknowledged-write log (appended by write, read by verify)");
  flags.Define("blocks", "0", "write: number of blocks (0: the whole region)");
  flags.Define("block-size", "4096", "write: block size in bytes");
  flags.Define("seconds", "0", "write: stop after this many seconds");
  flags.Define("ops", "0", "write: stop after this many writes");
  flags.Define("until-stopped", "false", "write: until SIGINT/SIGTERM (SIGUSR1: fence mark)");
  flags.Define("file", "", "verify: read this file (a replica's data file) instead of --uri");
  flags.Define("qd", "16", "queue depth");
  flags.Define("seed", "", "random seed (default: random)");
  flags.Define("region", "", "write: OFF:LEN byte range (default: the whole export)");
  flags.Define("io-timeout-ms", "30000", "fail when no I/O completes for this long");
  flags.Define("allow-errors", "false", "write: count failed writes and go on (reconnecting)");
  flags.Define("fua", "false", "write: set FUA on every write");
  flags.Define("verify-after-write", "false", "write: run verify when the writes are done");
  if (argc < 2 || argv[1][0] == '-') return Usage(flags, "missing command");
  std::string cmd = argv[1];
  Status st = flags.Parse(argc - 1, argv + 1);
  if (!st.ok()) return Usage(flags, st.ToString());
  if (flags.help_requested()) return Usage(flags, "");
  if (cmd != "write" && cmd != "verify") return Usage(flags, "unknown command " + cmd);

  Options o;
  o.uri = flags.Get("uri");
  o.log = flags.Get("log");
  o.allow_errors = flags.GetBool("allow-errors");
  o.fua = flags.GetBool("fua");
  o.verify_after_write = flags.GetBool("verify-after-write");
  o.until_stopped = flags.GetBool("until-stopped");
  o.file = flags.Get("file");
  for (auto [name, out, sizes] : {std::tuple{"blocks", &o.blocks, false},
                                  {"block-size", &o.block_size, true},
                                  {"seconds", &o.seconds, false},
                                  {"ops", &o.ops, false},
                                  {"qd", &o.qd, false},
                                  {"io-timeout-ms", &o.io_timeout_ms, false}}) {
    if (!(st = flags.GetUint(name, out, sizes)).ok()) return Usage(flags, st.ToString());
  }
  if (!flags.Get("seed").empty()) {
    if (!(st = flags.GetUint("seed", &o.seed)).ok()) return Usage(flags, st.ToString());
    o.seed_set = true;
  }
  if (!flags.Get("region").empty()) {
    if (!(st = ParseRegion(flags.Get("region"), &o.region_offset, &o.region_length)).ok()) {
      return Usage(flags, st.ToString());
    }
    o.region_set = true;
  }
  if (o.log.empty()) return Usage(flags, "--log is required");
  if (o.uri.empty() && (cmd == "write" || o.file.empty())) {
    return Usage(flags, cmd == "write" ? "--uri is required" : "--uri or --file is required");
  }
  if (!o.file.empty() && cmd == "write") return Usage(flags, "--file is for verify only");
  if (o.qd == 0 || o.io_timeout_ms == 0)
    return Usage(flags, "--qd and --io-timeout-ms must be > 0");

  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction fa = {};
  fa.sa_handler = OnFenceSignal;
  sigaction(SIGUSR1, &fa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (cmd == "verify") return Verify(o);

  if (o.block_size < kMinStampBlockSize || o.block_size % 512 != 0 || o.block_size > (1u << 24)) {
    return Usage(flags, "--block-size must be a multiple of 512 between 512 and 16M");
  }
  if (o.seconds == 0 && o.ops == 0 && !o.until_stopped) {
    return Usage(flags, "one of --seconds, --ops or --until-stopped is required");
  }
  auto conn = Connect(o.uri);
  if (!conn.ok()) {
    std::fprintf(stderr, "ack_verifier: %s\n", conn.status().ToString().c_str());
    return 2;
  }
  int64_t size = nbd_get_size(conn->get());
  if (size < 0) {
    std::fprintf(stderr, "ack_verifier: nbd_get_size: %s\n", nbd_get_error());
    return 2;
  }
  uint64_t region_offset = o.region_set ? o.region_offset : 0;
  uint64_t region_length = o.region_set ? o.region_length : static_cast<uint64_t>(size);
  if (region_offset % o.block_size != 0 ||
      region_offset + region_length > static_cast<uint64_t>(size)) {
    return Usage(flags, "--region must be block aligned and inside the export (size " +
                            std::to_string(size) + ")");
  }
  uint64_t blocks = region_length / o.block_size;
  if (o.blocks != 0) blocks = std::min(blocks, o.blocks);
  if (blocks < o.qd) return Usage(flags, "need at least --qd blocks in the region");
  Writer writer(o, region_offset, blocks);
  int rc = writer.Run(std::move(*conn));
  if (rc == 0 && o.verify_after_write) rc = Verify(o);
  return rc;
}

}  // namespace
}  // namespace tandem::testtools

int main(int argc, char** argv) { return tandem::testtools::Main(argc, argv); }

#include "tests/tools/ack_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "common/unique_fd.h"

namespace tandem::testtools {

namespace {

constexpr const char* kHeader = "# tandem ack_verifier log v1\n";

Status ErrnoStatus(const std::string& context, int err) {
  return Status::Internal(context + ": " + std::strerror(err));
}

// Splits `line` on single spaces.
std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= line.size()) {
    size_t sp = line.find(' ', start);
    if (sp == std::string_view::npos) sp = line.size();
    out.push_back(line.substr(start, sp - start));
    start = sp + 1;
  }
  return out;
}

bool ParseU64(std::string_view s, int base, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    if (v > (UINT64_MAX - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base)) return false;
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

// `fence`: the current run's fence mark (UINT64_MAX: none yet).
Status ParseLine(std::string_view line, AckLogContents* log, uint64_t* fence) {
  if (line.empty() || line[0] == '#') return Status::Ok();
  std::vector<std::string_view> f = Fields(line);
  if (f[0] == "R") {
    uint64_t run, writer, bs, off, len;
    if (f.size() != 6 || !ParseU64(f[1], 10, &run) || !ParseU64(f[2], 16, &writer) ||
        !ParseU64(f[3], 10, &bs) || !ParseU64(f[4], 10, &off) || !ParseU64(f[5], 10, &len) ||
        run == 0 || run > UINT32_MAX || bs == 0 || bs > UINT32_MAX) {
      return Status::DataLoss("malformed run header");
    }
    if (!log->runs.empty() && log->runs.front().block_size != bs) {
      return Status::DataLoss("runs with different block sizes in one log");
    }
    log->runs.push_back(
        AckLogRun{static_cast<uint32_t>(run), writer, static_cast<uint32_t>(bs), off, len});
    *fence = UINT64_MAX;
    return Status::Ok();
  }
  if (log->runs.empty()) return Status::DataLoss("record before the first run header");
  uint64_t offset, seq, err;
  if (f[0] == "M" && f.size() == 2 && ParseU64(f[1], 10, &seq)) {
    if ((seq >> kRunSeqShift) != log->runs.back().run) {
      return Status::DataLoss("fence mark outside its run's sequence numbers");
    }
    if (seq < *fence) *fence = seq;
    ++log->fence_marks;
    return Status::Ok();
  }
  if (f[0] == "A" && f.size() == 3 && ParseU64(f[1], 10, &offset) && ParseU64(f[2], 10, &seq)) {
    ++log->acked;
    if (seq >= *fence && (seq >> kRunSeqShift) == log->runs.back().run) {
      // Issued after a newer target took over: a fenced ack. Its block may
      // hold either content, as for a failed write.
      ++log->fenced_acked;
      uint64_t& newest = log->newest_failed[offset];
      if (seq > newest) newest = seq;
      return Status::Ok();
    }
    uint64_t& newest = log->newest_acked[offset];
    if (seq > newest) newest = seq;
    return Status::Ok();
  }
  if (f[0] == "F" && f.size() == 4 && ParseU64(f[1], 10, &offset) && ParseU64(f[2], 10, &seq) &&
      ParseU64(f[3], 10, &err)) {
    uint64_t& newest = log->newest_failed[offset];
    if (seq > newest) newest = seq;
    ++log->failed;
    return Status::Ok();
  }
  return Status::DataLoss("malformed record");
}

}  // namespace

Result<AckLogContents> ParseAckLog(std::string_view text) {
  AckLogContents log;
  size_t pos = 0;
  size_t line_no = 0;
  uint64_t fence = UINT64_MAX;
  while (pos < text.size()) {
    ++line_no;
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      log.torn_tail = true;  // a writer died mid-line: that record was never complete
      break;
    }
    Status st = ParseLine(text.substr(pos, nl - pos), &log, &fence);
    if (!st.ok()) return st.WithContext("ack log line " + std::to_string(line_no));
    pos = nl + 1;
  }
  return log;
}

Result<AckLogContents> ReadAckLog(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return Status::NotFound("no ack log at " + path);
    return ErrnoStatus("open " + path, errno);
  }
  std::string text;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read " + path, errno);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return ParseAckLog(text);
}

Result<std::unique_ptr<AckLogWriter>> AckLogWriter::Open(const std::string& path,
                                                         uint64_t writer_id, uint32_t block_size,
                                                         uint64_t region_offset,
                                                         uint64_t region_length) {
  uint32_t runs = 0;
  bool fresh = true;
  Result<AckLogContents> existing = ReadAckLog(path);
  if (existing.ok()) {
    fresh = false;
    if (!existing->runs.empty()) {
      runs = existing->runs.back().run;
      if (existing->runs.front().block_size != block_size) {
        return Status::InvalidArgument("ack log " + path + " was written with block size " +
                                       std::to_string(existing->runs.front().block_size));
      }
    }
    if (existing->torn_tail) {
      // Cut the torn record so this run's records start on a line of their own.
      UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      struct stat sb;
      if (!fd.valid() || ::fstat(fd.get(), &sb) != 0) return ErrnoStatus("open " + path, errno);
      off_t end = sb.st_size;
      char c = 0;
      while (end > 0 && ::pread(fd.get(), &c, 1, end - 1) == 1 && c != '\n') --end;
      if (::ftruncate(fd.get(), end) != 0) return ErrnoStatus("truncate " + path, errno);
    }
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) return ErrnoStatus("open " + path, errno);
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  uint32_t run = runs + 1;
  if (fresh) std::fputs(kHeader, f);
  std::fprintf(f, "R %u %" PRIx64 " %u %" PRIu64 " %" PRIu64 "\n", run, writer_id, block_size,
               region_offset, region_length);
  std::unique_ptr<AckLogWriter> w(new AckLogWriter(f, run));
  Status st = w->Sync();
  if (!st.ok()) return st;
  return w;
}

AckLogWriter::~AckLogWriter() { (void)Close(); }

void AckLogWriter::Acked(uint64_t offset, uint64_t seq) {
  if (file_) std::fprintf(file_, "A %" PRIu64 " %" PRIu64 "\n", offset, seq);
}

void AckLogWriter::Failed(uint64_t offset, uint64_t seq, int error) {
  if (file_) std::fprintf(file_, "F %" PRIu64 " %" PRIu64 " %d\n", offset, seq, error);
}

Status AckLogWriter::Fence(uint64_t next_seq) {
  if (file_ == nullptr) return Status::Ok();
  std::fprintf(file_, "M %" PRIu64 "\n", next_seq);
  return Sync();
}

Status AckLogWriter::Sync() {
  if (file_ == nullptr) return Status::Ok();
  if (std::fflush(file_) != 0) return ErrnoStatus("flush ack log", errno);
  if (::fdatasync(fileno(file_)) != 0) return ErrnoStatus("fdatasync ack log", errno);
  return Status::Ok();
}

Status AckLogWriter::Close() {
  if (file_ == nullptr) return Status::Ok();
  Status st = Sync();
  std::fclose(file_);
  file_ = nullptr;
  return st;
}

}  // namespace tandem::testtools

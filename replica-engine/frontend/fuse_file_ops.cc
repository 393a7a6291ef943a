// The FUSE operations of the one-file filesystem: a root directory holding
// the exported file. Every handler runs on a worker thread (the slot of
// that worker is in tls_slot). Nothing here blocks but Execute().

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "replica-engine/frontend/fuse_export_impl.h"

namespace tandem::frontend {

namespace {

// Size and layout never change while mounted: let the kernel cache them.
constexpr double kAttrTimeoutS = 3600.0;

thread_local FuseSlot* tls_slot = nullptr;

// Brackets a handler that reaches the device, reply included (see
// Impl::BeginRequest).
class RequestScope {
 public:
  explicit RequestScope(FuseExport::Impl* self) : self_(self), ok_(self->BeginRequest()) {}
  ~RequestScope() {
    if (ok_) self_->EndRequest();
  }
  RequestScope(const RequestScope&) = delete;
  RequestScope& operator=(const RequestScope&) = delete;
  // False once the export is shutting down: answer EIO.
  bool ok() const { return ok_; }

 private:
  FuseExport::Impl* self_;
  bool ok_;
};

// Brackets a whole-block write, trim or write-zeroes (Impl::EnterWrite).
class WriteScope {
 public:
  explicit WriteScope(FuseExport::Impl* self) : self_(self) { self_->EnterWrite(); }
  ~WriteScope() { self_->ExitWrite(); }
  WriteScope(const WriteScope&) = delete;
  WriteScope& operator=(const WriteScope&) = delete;

 private:
  FuseExport::Impl* self_;
};

// Brackets a read-modify-write (Impl::BeginExclusiveWrite).
class ExclusiveWriteScope {
 public:
  explicit ExclusiveWriteScope(FuseExport::Impl* self) : self_(self) {
    self_->BeginExclusiveWrite();
  }
  ~ExclusiveWriteScope() { self_->EndExclusiveWrite(); }
  ExclusiveWriteScope(const ExclusiveWriteScope&) = delete;
  ExclusiveWriteScope& operator=(const ExclusiveWriteScope&) = delete;

 private:
  FuseExport::Impl* self_;
};

FuseExport::Impl* Self(fuse_req_t req) {
  return static_cast<FuseExport::Impl*>(fuse_req_userdata(req));
}

void FillAttr(const FuseExport::Impl* self, fuse_ino_t ino, struct stat* st) {
  memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_uid = geteuid();
  st->st_gid = getegid();
  st->st_blksize = self->block_size();
  if (ino == FUSE_ROOT_ID) {
    st->st_mode = S_IFDIR | 0700;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(self->size());
    st->st_blocks = static_cast<blkcnt_t>(self->size() / 512);
  }
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  FuseExport::Impl* self = Self(req);
  if (parent != FUSE_ROOT_ID || self->options().file_name != name) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  fuse_entry_param e{};
  e.ino = kFileIno;
  e.attr_timeout = kAttrTimeoutS;
  e.entry_timeout = kAttrTimeoutS;
  FillAttr(self, kFileIno, &e.attr);
  fuse_reply_entry(req, &e);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != FUSE_ROOT_ID && ino != kFileIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  FillAttr(Self(req), ino, &st);
  fuse_reply_attr(req, &st, kAttrTimeoutS);
}

// The file cannot change size (it is the volume): truncation to another size
// is refused, which also makes open(O_TRUNC) fail. Mode, owner and times are
// fixed; requests to change them are answered with the unchanged attributes.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  FuseExport::Impl* self = Self(req);
  if (ino != FUSE_ROOT_ID && ino != kFileIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if ((to_set & FUSE_SET_ATTR_SIZE) != 0 &&
      (ino != kFileIno || static_cast<uint64_t>(attr->st_size) != self->size())) {
    fuse_reply_err(req, EPERM);
    return;
  }
  struct stat st;
  FillAttr(self, ino, &st);
  fuse_reply_attr(req, &st, kAttrTimeoutS);
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kFileIno) {
    fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
    return;
  }
  // With FUSE_CAP_ATOMIC_O_TRUNC the truncation comes as an open flag
  // instead of a setattr: refuse it the same way.
  if ((fi->flags & O_TRUNC) != 0) {
    fuse_reply_err(req, EPERM);
    return;
  }
  // Bypass the page cache: every read/write reaches the device, and a loop
  // device with --direct-io=on gets O_DIRECT semantics end to end.
  fi->direct_io = 1;
  fi->keep_cache = 0;
  fi->noflush = 1;  // close() needs no FLUSH round trip: fsync is the barrier
  fuse_reply_open(req, fi);
}

// Runs one device request on the worker's slot. Returns 0 or an errno.
int Run(FuseExport::Impl* self, FuseSlot* slot, target::BlockOp op, uint32_t flags, uint64_t offset,
        uint64_t length, uint8_t* buf) {
  slot->op = op;
  slot->flags = flags;
  slot->offset = offset;
  slot->length = length;
  slot->buf = buf;
  return self->Execute(slot);
}

void OpRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  FuseExport::Impl* self = Self(req);
  FuseSlot* slot = tls_slot;
  const uint64_t dev_size = self->size();
  const uint64_t offset = static_cast<uint64_t>(off);
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (offset >= dev_size || size == 0) {
    fuse_reply_buf(req, nullptr, 0);  // end of file
    return;
  }
  const uint64_t len = std::min<uint64_t>(size, dev_size - offset);
  if (len > self->options().max_request) {
    fuse_reply_err(req, EINVAL);  // cannot happen: max_read bounds it
    return;
  }
  RequestScope scope(self);
  if (!scope.ok()) {
    fuse_reply_err(req, EIO);
    return;
  }
  // Device reads are whole blocks: widen to block boundaries into the
  // slot's buffer (sized max_request + 2 blocks) and reply the middle.
  const uint64_t bs = self->block_size();
  const uint64_t start = offset / bs * bs;
  const uint64_t end = (offset + len + bs - 1) / bs * bs;
  int err = Run(self, slot, target::BlockOp::kRead, 0, start, end - start, slot->read_buf);
  self->CountRequest(err != 0, err == 0 ? len : 0, 0);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_buf(req, reinterpret_cast<const char*>(slot->read_buf + (offset - start)), len);
}

// A write that does not cover whole blocks (the kernel cuts a direct write
// from a buffer that is not page aligned at page boundaries, so a plain
// pwrite() of whole blocks can arrive that way; a loop device never sends
// one): read the partial head and tail blocks, patch, write the whole range.
// No other write of this export runs meanwhile (the write gate), so none can
// land between the read and the write and be undone.
int ReadModifyWrite(FuseExport::Impl* self, FuseSlot* slot, const char* data, uint64_t offset,
                    uint64_t size, uint32_t flags) {
  const uint64_t bs = self->block_size();
  const uint64_t start = offset / bs * bs;
  const uint64_t end = (offset + size + bs - 1) / bs * bs;
  uint8_t* bounce = slot->read_buf;  // max_request + 2 blocks
  ExclusiveWriteScope exclusive(self);
  int err = 0;
  if (offset != start) err = Run(self, slot, target::BlockOp::kRead, 0, start, bs, bounce);
  // The tail block, unless it is the head block just read.
  if (err == 0 && offset + size != end && !(offset != start && end - bs == start)) {
    err = Run(self, slot, target::BlockOp::kRead, 0, end - bs, bs, bounce + (end - bs - start));
  }
  if (err != 0) return err;
  memcpy(bounce + (offset - start), data, size);
  return Run(self, slot, target::BlockOp::kWrite, flags, start, end - start, bounce);
}

void OpWrite(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
             fuse_file_info* fi) {
  FuseExport::Impl* self = Self(req);
  FuseSlot* slot = tls_slot;
  const uint64_t bs = self->block_size();
  const uint64_t offset = static_cast<uint64_t>(off);
  // O_DSYNC (file flag or RWF_DSYNC; O_SYNC includes it) is a FUA write.
  const uint32_t flags = (fi->flags & O_DSYNC) != 0 ? target::kBlockFua : 0;
  RequestScope scope(self);
  int err = 0;
  if (!scope.ok()) {
    err = EIO;
  } else if (off < 0) {
    err = EINVAL;
  } else if (offset > self->size() || size > self->size() - offset) {
    err = ENOSPC;  // the file is the volume: it cannot grow
  } else if (size > self->options().max_request) {
    err = EINVAL;  // cannot happen: max_write bounds it
  } else if (size == 0) {
    err = 0;
  } else if (offset % bs != 0 || size % bs != 0) {
    err = ReadModifyWrite(self, slot, buf, offset, size, flags);
  } else {
    // libfuse's receive buffer (slot->fbuf) holds the data until we reply:
    // the device reads it in place.
    WriteScope gate(self);
    err = Run(self, slot, target::BlockOp::kWrite, flags, offset, size,
              reinterpret_cast<uint8_t*>(const_cast<char*>(buf)));
  }
  self->CountRequest(err != 0, 0, err == 0 ? size : 0);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_write(req, size);
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  FuseExport::Impl* self = Self(req);
  if (ino != kFileIno) {
    fuse_reply_err(req, 0);
    return;
  }
  RequestScope scope(self);
  int err = scope.ok() ? Run(self, tls_slot, target::BlockOp::kFlush, 0, 0, 0, nullptr) : EIO;
  self->CountRequest(err != 0, 0, 0);
  fuse_reply_err(req, err);
}

void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t length,
                 fuse_file_info*) {
  FuseExport::Impl* self = Self(req);
  const uint64_t bs = self->block_size();
  const uint64_t offset = static_cast<uint64_t>(off);
  const uint64_t len = static_cast<uint64_t>(length);
  int err = 0;
  bool reaches_device = false;
  target::BlockOp op = target::BlockOp::kTrim;
  if (ino != kFileIno) {
    err = EBADF;
  } else if (off < 0 || length <= 0) {
    err = EINVAL;
  } else if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE) {
    // Preallocation: the volume is thin, but every block of it is already
    // addressable; beyond the end the file would have to grow.
    err = offset + len <= self->size() ? 0 : EFBIG;
  } else if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
    op = target::BlockOp::kTrim;
    reaches_device = true;
  } else if ((mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE) {
    op = target::BlockOp::kWriteZeroes;
    reaches_device = true;
  } else {
    // Never ENOSYS: the kernel would stop sending fallocate for good.
    err = EOPNOTSUPP;
  }
  if (reaches_device) {
    if (offset % bs != 0 || len % bs != 0) {
      err = EINVAL;
    } else if (offset > self->size() || len > self->size() - offset) {
      err = EINVAL;
    } else {
      RequestScope scope(self);
      if (scope.ok()) {
        WriteScope gate(self);
        err = Run(self, tls_slot, op, 0, offset, len, nullptr);
      } else {
        err = EIO;
      }
      self->CountRequest(err != 0, 0, 0);
      fuse_reply_err(req, err);
      return;
    }
  }
  self->CountRequest(err != 0, 0, 0);
  fuse_reply_err(req, err);
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  FuseExport::Impl* self = Self(req);
  struct statvfs st {};
  // The loop driver takes its discard granularity from f_bsize.
  st.f_bsize = self->block_size();
  st.f_frsize = self->block_size();
  st.f_blocks = self->size() / self->block_size();
  st.f_files = 2;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  fuse_reply_open(req, fi);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  FuseExport::Impl* self = Self(req);
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  // Three entries; the reply buffer is the worker's read buffer (no
  // allocation), which holds max_request bytes.
  char* out = reinterpret_cast<char*>(tls_slot->read_buf);
  size = std::min<size_t>(size, self->options().max_request);
  const char* names[] = {".", "..", self->options().file_name.c_str()};
  const fuse_ino_t inos[] = {FUSE_ROOT_ID, FUSE_ROOT_ID, kFileIno};
  size_t used = 0;
  for (off_t i = off; i < 3; ++i) {
    struct stat st {};
    st.st_ino = inos[i];
    st.st_mode = i == 2 ? S_IFREG : S_IFDIR;
    size_t n = fuse_add_direntry(req, out + used, size - used, names[i], &st, i + 1);
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, out, used);
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  auto* self = static_cast<FuseExport::Impl*>(userdata);
  conn->max_write = std::min(conn->max_write, self->options().max_request);
  conn->max_read = self->options().max_request;
  conn->max_background = self->options().max_background;
  conn->congestion_threshold = self->options().max_background * 3 / 4;
  // Asynchronous direct I/O: a loop device's AIO requests are sent without
  // waiting for each other.
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  // Requests go one by one through our fixed buffers: no splice.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

}  // namespace

const fuse_lowlevel_ops& FuseExport::Impl::Ops() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = OpInit;
    o.lookup = OpLookup;
    o.getattr = OpGetattr;
    o.setattr = OpSetattr;
    o.open = OpOpen;
    o.read = OpRead;
    o.write = OpWrite;
    o.fsync = OpFsync;
    o.fallocate = OpFallocate;
    o.statfs = OpStatfs;
    o.opendir = OpOpendir;
    o.readdir = OpReaddir;
    return o;
  }();
  return ops;
}

void FuseExport::Impl::WorkerMain(FuseSlot* slot) {
  tls_slot = slot;
  while (!fuse_session_exited(se_)) {
    int r = fuse_session_receive_buf(se_, &slot->fbuf);
    if (r == -EINTR || r == -EAGAIN) continue;
    // 0: the connection ended (ENODEV: aborted or unmounted); libfuse has
    // marked the session exited. Negative: a read error.
    if (r <= 0) break;
    fuse_session_process_buf(se_, &slot->fbuf);
  }
  tls_slot = nullptr;
  MutexLock lock(&exit_mu_);
  --workers_live_;
  exit_cv_.notify_all();
}

}  // namespace tandem::frontend

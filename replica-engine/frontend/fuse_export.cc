// FuseExport's lifecycle: mount, worker threads, shutdown and teardown.
// The request path is in fuse_request_slot.cc, the operations in
// fuse_file_ops.cc.

#include "replica-engine/frontend/fuse_export.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/bits.h"
#include "common/logging.h"
#include "replica-engine/frontend/fuse_control.h"
#include "replica-engine/frontend/fuse_export_impl.h"

namespace tandem::frontend {

namespace {
constexpr const char* kTag = "fuse";
constexpr uint32_t kMaxThreads = 256;
// libfuse 3.14 reads requests into a buffer of 256 pages plus a header:
// larger writes cannot arrive.
constexpr uint32_t kMaxRequestLimit = 1u << 20;

std::atomic<FuseMountHook> mount_hook{nullptr};

// OK when `dir` is an empty directory.
Status CheckEmptyDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return PosixError("opendir " + dir, errno);
  Status st;
  while (dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      st = Status::InvalidArgument("FUSE mount_dir is not empty: " + dir);
      break;
    }
  }
  closedir(d);
  return st;
}
}  // namespace

FuseExport::Impl::Impl(EventLoop* loop, target::BlockDevice* device, FuseExportOptions options)
    : loop_(loop), device_(device), options_(std::move(options)) {}

FuseExport::Impl::~Impl() {
  for (uint32_t i = 0; i < nslots_; ++i) free(slots_[i].fbuf.mem);
  if (buffers_ != nullptr) munmap(buffers_, buffers_len_);
}

Status FuseExport::Impl::CheckOptions() {
  if (options_.transport == FuseTransport::kIoUring) {
    return Status::Unimplemented(
        std::string("FUSE over io_uring needs libfuse >= 3.17 (and a kernel with "
                    "CONFIG_FUSE_IO_URING); this engine runs libfuse ") +
        fuse_pkgversion());
  }
  const std::string& dir = options_.mount_dir;
  if (dir.empty() || dir.front() != '/') {
    return Status::InvalidArgument("FUSE mount_dir must be an absolute path: '" + dir + "'");
  }
  const std::string& fname = options_.file_name;
  if (fname.empty() || fname == "." || fname == ".." || fname.find('/') != std::string::npos ||
      fname.size() > 255) {
    return Status::InvalidArgument("FUSE file_name must be a plain file name: '" + fname + "'");
  }
  if (options_.threads == 0 || options_.threads > kMaxThreads) {
    return Status::InvalidArgument("FUSE threads must be 1.." + std::to_string(kMaxThreads));
  }
  block_size_ = device_->block_size();
  size_ = device_->size();
  const uint32_t max_io = device_->max_io_size();
  if (!IsPowerOfTwo(block_size_) || block_size_ > 65536 || size_ == 0 || size_ % block_size_ != 0 ||
      max_io < block_size_) {
    return Status::InvalidArgument(
        "FUSE export '" + options_.name +
        "': device block size must be a power of two <= 64 KiB dividing a non-zero size, and "
        "max_io_size at least one block");
  }
  if (options_.max_request < 4096 || options_.max_request > kMaxRequestLimit ||
      options_.max_request % block_size_ != 0 || options_.max_request % 4096 != 0) {
    return Status::InvalidArgument(
        "FUSE max_request must be a multiple of 4 KiB and of the block size, <= 1 MiB");
  }
  if (options_.max_background == 0 || options_.max_background > 65535) {
    return Status::InvalidArgument("FUSE max_background must be 1..65535");
  }
  piece_ = max_io / block_size_ * block_size_;
  return Status::Ok();
}

// Slots and their read buffers, all made now: nothing is allocated per
// request. MAP_NORESERVE: only pages a read touches become resident.
Status FuseExport::Impl::AllocateSlots() {
  if (buffers_ != nullptr) munmap(buffers_, buffers_len_);  // a Prepare that failed before
  buffers_ = nullptr;
  nslots_ = options_.threads;
  slots_ = std::make_unique<FuseSlot[]>(nslots_);
  const size_t per = (options_.max_request + 2ull * block_size_ + 4095) / 4096 * 4096;
  buffers_len_ = per * nslots_;
  void* mem = mmap(nullptr, buffers_len_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return PosixError("mmap FUSE read buffers", errno);
  buffers_ = static_cast<uint8_t*>(mem);
  for (uint32_t i = 0; i < nslots_; ++i) {
    slots_[i].impl = this;
    slots_[i].read_buf = buffers_ + per * i;
  }
  return Status::Ok();
}

// Everything that waits for the kernel: the mount (and its directory), the
// workers, fusectl. Off the loop (export.h); the undo of each step on
// failure is in Mount().
Status FuseExport::Impl::Prepare() {
  if (state_ != State::kNew) {
    return Status::FailedPrecondition("FUSE export already prepared or started");
  }
  TANDEM_RETURN_IF_ERROR(CheckOptions());
  TANDEM_RETURN_IF_ERROR(AllocateSlots());
  TANDEM_RETURN_IF_ERROR(Mount());
  StartWorkers();
  const std::string& dir = options_.mount_dir;
  // The connection's name under /sys/fs/fuse/connections is the mount's
  // device number (kernel encoding). stat() is answered by the workers.
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    conn_id_ = std::to_string((static_cast<uint64_t>(major(st.st_dev)) << 20) | minor(st.st_dev));
  } else {
    TLOG_WARN(kTag, "export '%s': stat %s: %s", options_.name.c_str(), dir.c_str(),
              strerror(errno));
  }
  Status ctl = EnsureFuseControlMounted();
  if (!ctl.ok()) {
    TLOG_WARN(kTag,
              "export '%s': %s; a shutdown while the file is still in use (a loop device "
              "attached) cannot abort the connection and waits for its users",
              options_.name.c_str(), ctl.ToString().c_str());
  }
  state_ = State::kPrepared;
  return Status::Ok();
}

// On the loop, never blocking: from here the loop's BeforeWait takes the
// workers' requests (any queued since the mount included).
Status FuseExport::Impl::Start() {
  if (state_ != State::kNew && state_ != State::kPrepared) {
    return Status::FailedPrecondition("FUSE export already started");
  }
  if (state_ == State::kNew) TANDEM_RETURN_IF_ERROR(Prepare());
  loop_->AddIdler(this);
  idler_added_ = true;
  state_ = State::kRunning;
  loop_->Wake();
  TLOG_INFO(kTag, "export '%s' (%llu bytes) as %s, %u threads", options_.name.c_str(),
            static_cast<unsigned long long>(size_.load()), file_path().c_str(), options_.threads);
  return Status::Ok();
}

Status FuseExport::Impl::Mount() {
  if (FuseMountHook hook = mount_hook.load(std::memory_order_acquire)) hook(options_.mount_dir);
  const std::string& dir = options_.mount_dir;
  struct stat st;
  // A FUSE mount whose server died (a crashed engine): statfs() is always
  // sent to the server and fails with ENOTCONN (stat() may be answered from
  // the attribute cache). Detach it.
  struct statfs sf;
  if (statfs(dir.c_str(), &sf) != 0 && errno == ENOTCONN) {
    TLOG_WARN(kTag, "export '%s': detaching a stale FUSE mount at %s", options_.name.c_str(),
              dir.c_str());
    if (umount2(dir.c_str(), MNT_DETACH) != 0) {
      return PosixError("umount stale FUSE mount " + dir, errno);
    }
  }
  if (mkdir(dir.c_str(), 0700) == 0) {
    created_dir_ = true;
  } else if (errno == EEXIST) {
    if (stat(dir.c_str(), &st) != 0) return PosixError("stat " + dir, errno);
    if (!S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("FUSE mount_dir exists and is not a directory: " + dir);
    }
    TANDEM_RETURN_IF_ERROR(CheckEmptyDir(dir));
  } else {
    return PosixError("mkdir " + dir, errno);
  }

  // Mount options: fsname/subtype name it in /proc/mounts; default_permissions
  // lets the kernel check the file's 0600 mode (only root and the owner);
  // max_read bounds the reads to the slot buffers.
  std::string opts =
      "fsname=tandem:" + options_.name +
      ",subtype=tandem,default_permissions,max_read=" + std::to_string(options_.max_request);
  std::string arg0 = "tandem-engine";
  std::string arg1 = "-o";
  char* argv[] = {arg0.data(), arg1.data(), opts.data(), nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, argv);
  se_ = fuse_session_new(&args, &Ops(), sizeof(fuse_lowlevel_ops), this);
  fuse_opt_free_args(&args);  // libfuse may have copied argv into its own
  if (se_ == nullptr) {
    if (created_dir_) rmdir(dir.c_str());
    created_dir_ = false;
    return Status::Internal("fuse_session_new failed for " + dir);
  }
  if (fuse_session_mount(se_, dir.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    if (created_dir_) rmdir(dir.c_str());
    created_dir_ = false;
    return Status::Unavailable("FUSE mount at " + dir +
                               " failed (root and /dev/fuse needed; see the log above)");
  }
  mounted_ = true;
  return Status::Ok();
}

void FuseExport::Impl::StartWorkers() {
  {
    MutexLock lock(&exit_mu_);
    workers_live_ = nslots_;
  }
  workers_.reserve(nslots_);
  for (uint32_t i = 0; i < nslots_; ++i) {
    workers_.emplace_back([this, i] { WorkerMain(&slots_[i]); });
  }
}

void FuseExport::Impl::Teardown() {
  const std::string& dir = options_.mount_dir;
  // Abort first: the kernel then fails every request still queued or sent
  // later (a loop device still attached gets EIO, it does not hang) and the
  // workers' reads end with ENODEV. Requests of ours on the device have
  // finished (Shutdown) or were abandoned (destructor).
  bool aborted = !conn_id_.empty() && AbortFuseConnection(conn_id_).ok();
  if (!aborted) {
    // Without fusectl: detaching the mount ends the connection only when no
    // one has the file open.
    if (umount2(dir.c_str(), MNT_DETACH) == 0) mounted_ = false;
  }
  bool all_exited;
  {
    MutexLock lock(&exit_mu_);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.teardown_timeout_ms);
    while (workers_live_ != 0 && lock.WaitUntil(&exit_cv_, deadline)) {
    }
    all_exited = workers_live_ == 0;
  }
  if (!all_exited) {
    // Something still holds the file and the connection could not be
    // aborted. Leave the workers serving (every request gets EIO: stopping_
    // is set) rather than hang; this object is never freed.
    TLOG_ERROR(kTag,
               "export '%s': the FUSE connection could not be aborted and %s is still in use "
               "(a loop device attached?); leaving its worker threads answering EIO",
               options_.name.c_str(), file_path().c_str());
    for (auto& w : workers_) w.detach();
    workers_.clear();
    leaked_ = true;
    return;
  }
  for (auto& w : workers_) w.join();
  workers_.clear();
  // Closes /dev/fuse; it unmounts only a live connection, so detach
  // ourselves too (EINVAL: already gone).
  fuse_session_unmount(se_);
  if (mounted_ && umount2(dir.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    TLOG_WARN(kTag, "export '%s': umount %s: %s", options_.name.c_str(), dir.c_str(),
              strerror(errno));
  }
  mounted_ = false;
  fuse_session_destroy(se_);
  se_ = nullptr;
  if (created_dir_ && rmdir(dir.c_str()) != 0) {
    TLOG_WARN(kTag, "export '%s': rmdir %s: %s", options_.name.c_str(), dir.c_str(),
              strerror(errno));
  }
  created_dir_ = false;
}

void FuseExport::Impl::Shutdown(void (*done)(void*), void* arg) {
  if (done != nullptr) shutdown_done_.emplace_back(done, arg);
  switch (state_) {
    case State::kNew:
      state_ = State::kStopped;
      [[fallthrough]];
    case State::kStopped: {
      // Never inside this call; the closure does not touch `this` (a
      // callback may destroy the export).
      auto callbacks = std::move(shutdown_done_);
      shutdown_done_.clear();
      if (!callbacks.empty()) {
        loop_->Post([callbacks] {
          for (auto& [fn, a] : callbacks) fn(a);
        });
      }
      return;
    }
    case State::kPrepared:
      // Mounted but not serving: the idler drains and tears down as below.
      loop_->AddIdler(this);
      idler_added_ = true;
      [[fallthrough]];
    case State::kRunning:
      stopping_.store(true, std::memory_order_seq_cst);
      state_ = State::kDraining;
      TLOG_INFO(kTag, "export '%s' shutting down", options_.name.c_str());
      loop_->Wake();  // BeforeWait starts the teardown once nothing is in flight
      return;
    case State::kDraining:
    case State::kTearingDown:
      return;  // `done` runs at Finish()
  }
}

void FuseExport::Impl::Finish() {
  if (stopper_.joinable()) stopper_.join();
  loop_->RemoveIdler(this);
  idler_added_ = false;
  state_ = State::kStopped;
  TLOG_INFO(kTag, "export '%s' shut down", options_.name.c_str());
  auto callbacks = std::move(shutdown_done_);
  shutdown_done_.clear();
  // We left the idler list while the loop iterates it: take another turn.
  loop_->Wake();
  for (auto& [fn, arg] : callbacks) fn(arg);  // `this` may be gone now
}

bool FuseExport::Impl::Destroy() {
  if (state_ == State::kPrepared || state_ == State::kRunning || state_ == State::kDraining) {
    stopping_.store(true, std::memory_order_seq_cst);
    if (!conn_id_.empty()) (void)AbortFuseConnection(conn_id_);
    // Workers waiting for the device reply EIO now; their requests stay on
    // the device and complete into this object later.
    abandon_.store(true, std::memory_order_seq_cst);
    for (uint32_t i = 0; i < nslots_; ++i) {
      slots_[i].state.fetch_or(FuseSlot::kAbandoned, std::memory_order_seq_cst);
      slots_[i].state.notify_one();
    }
    Teardown();
    // Slots queued and never submitted are simply dropped: their workers
    // answered EIO and are gone.
    queue_.store(nullptr, std::memory_order_relaxed);
    state_ = State::kStopped;
  } else if (state_ == State::kTearingDown) {
    if (stopper_.joinable()) stopper_.join();  // bounded by teardown_timeout_ms
    state_ = State::kStopped;
  }
  if (idler_added_) loop_->RemoveIdler(this);
  idler_added_ = false;
  if (leaked_) return false;
  if (device_inflight_ > 0) {
    orphaned_ = true;  // CompleteSlot deletes us at the last completion
    return false;
  }
  return true;
}

ExportDescription FuseExport::Impl::Describe() const {
  ExportDescription d;
  d.kind = ExportKind::kFuseFile;
  if (state_ == State::kRunning) d.path = file_path();
  d.counters.connections = state_ == State::kRunning ? 1 : 0;
  d.counters.requests = requests_.load(std::memory_order_relaxed);
  d.counters.errors = errors_.load(std::memory_order_relaxed);
  d.counters.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  d.counters.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  return d;
}

void FuseExport::Impl::SizeChanged() {
  const uint64_t size = device_->size();
  if (size == size_.load() || size % block_size_ != 0) return;
  size_.store(size, std::memory_order_release);
  TLOG_INFO(kTag, "export '%s': size now %llu bytes", options_.name.c_str(),
            static_cast<unsigned long long>(size));
  if (state_ != State::kRunning) return;
  // The kernel caches the file's attributes (kAttrTimeoutS): drop them, so
  // the next stat() asks us. A notification, not a request: no worker and
  // no reply are waited for, which keeps it safe on the loop thread.
  int rc = fuse_lowlevel_notify_inval_inode(se_, kFileIno, 0, 0);
  if (rc != 0 && rc != -ENOENT) {
    TLOG_WARN(kTag, "export '%s': invalidating the file's attributes: %s", options_.name.c_str(),
              strerror(-rc));
  }
}

void FuseExport::Impl::CountRequest(bool error, uint64_t read_bytes, uint64_t written_bytes) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (error) errors_.fetch_add(1, std::memory_order_relaxed);
  if (read_bytes != 0) bytes_read_.fetch_add(read_bytes, std::memory_order_relaxed);
  if (written_bytes != 0) bytes_written_.fetch_add(written_bytes, std::memory_order_relaxed);
}

// --- FuseExport ---------------------------------------------------------------

FuseExport::FuseExport(EventLoop* loop, target::BlockDevice* device, FuseExportOptions options)
    : impl_(new Impl(loop, device, std::move(options))) {}

FuseExport::~FuseExport() {
  if (impl_->Destroy()) delete impl_;
}

Status FuseExport::Prepare() {
  Status st = impl_->Prepare();
  if (!st.ok()) TLOG_WARN(kTag, "FUSE export not mounted: %s", st.ToString().c_str());
  return st;
}

Status FuseExport::Start() {
  Status st = impl_->Start();
  if (!st.ok()) TLOG_WARN(kTag, "FUSE export not started: %s", st.ToString().c_str());
  return st;
}

void SetFuseMountHookForTesting(FuseMountHook hook) {
  mount_hook.store(hook, std::memory_order_release);
}

void FuseExport::Shutdown(void (*done)(void*), void* arg) { impl_->Shutdown(done, arg); }

ExportDescription FuseExport::Describe() const { return impl_->Describe(); }

void FuseExport::SizeChanged() { impl_->SizeChanged(); }

std::string FuseExport::file_path() const { return impl_->file_path(); }

}  // namespace tandem::frontend

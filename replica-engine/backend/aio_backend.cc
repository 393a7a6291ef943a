#include "replica-engine/backend/aio_backend.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/backend/backend_factory.h"

namespace tandem::backend {

namespace {

// Keeps io_setup within typical fs.aio-max-nr budgets.
constexpr uint32_t kMaxDepth = 65536;
constexpr uint32_t kMaxSyncThreads = 16;

}  // namespace

Result<std::unique_ptr<StorageBackend>> NewAioBackend(const BackendOptions& options) {
  auto r = AioBackend::Create(options);
  if (!r.ok()) return r.status();
  return std::unique_ptr<StorageBackend>(std::move(*r));
}

Result<std::unique_ptr<AioBackend>> AioBackend::Create(const BackendOptions& options) {
  std::unique_ptr<AioBackend> b(new AioBackend(options));
  TANDEM_RETURN_IF_ERROR(b->Init());
  return b;
}

AioBackend::AioBackend(const BackendOptions& options)
    : depth_(std::clamp<uint32_t>(options.queue_depth, 1, kMaxDepth)),
      sync_threads_(std::clamp<uint32_t>(options.aio_sync_threads, 1, kMaxSyncThreads)),
      worker_(&AioBackend::ExecSyncOp) {}

Status AioBackend::Init() {
  const int ret = io_setup(static_cast<int>(depth_), &ctx_);
  if (ret < 0) {
    ctx_ = nullptr;
    return Status::Unavailable(std::string("io_setup: ") + std::strerror(-ret));
  }
  event_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd_.valid()) return PosixError("eventfd", errno);

  iocbs_.resize(depth_);
  free_iocbs_.reserve(depth_);
  for (uint32_t i = depth_; i-- > 0;) free_iocbs_.push_back(&iocbs_[i]);
  batch_.resize(depth_);
  events_.resize(depth_);
  worker_.SetCompletionFd(event_fd_.get());
  return worker_.Start(sync_threads_);
}

AioBackend::~AioBackend() {
  // io_destroy waits for the kernel to finish (or cancel) what it still owns,
  // so no DMA targets caller buffers after this returns.
  if (ctx_ != nullptr) io_destroy(ctx_);
}

Result<int> AioBackend::OpenFile(const char* path, bool create) {
  // Nothing to register for aio; the descriptor is used as is.
  // 0600: a replica's data is a tenant's; no other local user may read it.
  const int fd = ::open(path, O_RDWR | O_DIRECT | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (fd < 0) return PosixError(std::string("open ") + path, errno);
  return fd;
}

void AioBackend::CloseFile(int fd) {
  if (fd >= 0) ::close(fd);
}

void AioBackend::Queue(IoRequest* req) {
  CheckOwnerThread("Queue");
  if (!Admit(req)) return;
  if (req->op == IoOp::kRead || req->op == IoOp::kWrite) {
    pending_.PushBack(req);
  } else {
    // Run at Submit(), not here: Queue() must not block.
    sync_ops_.PushBack(req);
  }
}

void AioBackend::PrepIocb(iocb* cb, IoRequest* req) {
  const uint32_t done = req->done_bytes_;
  char* buf = static_cast<char*>(req->buf) + done;
  const long long offset = static_cast<long long>(req->offset + done);
  if (req->op == IoOp::kRead) {
    io_prep_pread(cb, req->fd, buf, req->length - done, offset);
  } else {
    io_prep_pwrite(cb, req->fd, buf, req->length - done, offset);
    // After io_prep_*, which memsets the iocb.
    if (req->flags & kFlagFua) cb->aio_rw_flags = RWF_DSYNC;
  }
  io_set_eventfd(cb, event_fd_.get());
  cb->data = req;
}

int32_t AioBackend::ExecSyncOp(const IoRequest& req) {
  // On a worker thread (BackendWorker): the syscall and nothing else.
  int ret;
  do {
    switch (req.op) {
      case IoOp::kFlush:
        ret = fdatasync(req.fd);
        break;
      case IoOp::kDiscard:
        ret = fallocate(req.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(req.offset), req.length);
        break;
      default:  // kWriteZeroes; Admit() lets nothing else get here
        ret = fallocate(req.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(req.offset), req.length);
        break;
    }
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) return -errno;
  return req.op == IoOp::kFlush ? 0 : static_cast<int32_t>(req.length);
}

int AioBackend::RunWorkerCompletions() {
  if (worker_.outstanding() == 0) return 0;
  int n = 0;
  IoRequestQueue finished;
  worker_.TakeCompleted(&finished);
  while (IoRequest* req = finished.PopFront()) {  // popped first: `done` may queue req again
    Finish(req, req->result);
    ++n;
  }
  return n;
}

int AioBackend::Submit() {
  CheckOwnerThread("Submit");
  while (!sync_ops_.empty()) worker_.Post(sync_ops_.PopFront());
  int submitted = 0;
  while (!pending_.empty() && !free_iocbs_.empty()) {
    int n = 0;
    while (!pending_.empty() && !free_iocbs_.empty()) {
      iocb* cb = free_iocbs_.back();
      free_iocbs_.pop_back();
      PrepIocb(cb, pending_.PopFront());
      batch_[n++] = cb;
    }
    int sent = 0;
    while (sent < n) {
      int ret;
      if (!TakeInjectedSubmitFailure(&ret)) ret = io_submit(ctx_, n - sent, batch_.data() + sent);
      if (ret > 0) {
        sent += ret;
        in_kernel_ += static_cast<uint32_t>(ret);
        submitted += ret;
        worker_.SubmitAccepted();
        continue;
      }
      if (ret == -EINTR) continue;
      if (ret == 0 || ret == -EAGAIN) {
        // Kernel out of resources: put the rest back, in order, for later,
        // and make sure a later Reap comes even if nothing else completes.
        for (int i = n - 1; i >= sent; --i) {
          pending_.PushFront(static_cast<IoRequest*>(batch_[i]->data));
          free_iocbs_.push_back(batch_[i]);
        }
        worker_.ArmSubmitRetry();
        return submitted;
      }
      // io_submit reports an error only for the first iocb (e.g. -EBADF,
      // -EINVAL); that request fails, the rest are retried.
      free_iocbs_.push_back(batch_[sent]);
      CompleteLocally(static_cast<IoRequest*>(batch_[sent]->data), ret);
      ++sent;
    }
  }
  return submitted;
}

bool AioBackend::OnCompletion(iocb* cb, long res) {
  auto* req = static_cast<IoRequest*>(cb->data);
  free_iocbs_.push_back(cb);
  --in_kernel_;
  if (res == -EAGAIN) {
    pending_.PushBack(req);
    return false;
  }
  if (res < 0) {
    Finish(req, static_cast<int32_t>(res));
    return true;
  }
  req->done_bytes_ += static_cast<uint32_t>(res);
  if (req->done_bytes_ < req->length) {
    if (res > 0) {
      pending_.PushBack(req);  // short transfer: the remainder goes again
      return false;
    }
    // 0 bytes: a read reached EOF (report what we have); a write making no
    // progress would loop forever.
    Finish(req, req->op == IoOp::kRead ? static_cast<int32_t>(req->done_bytes_) : -EIO);
    return true;
  }
  Finish(req, static_cast<int32_t>(req->done_bytes_));
  return true;
}

int AioBackend::Reap(int min_complete, int64_t timeout_us) {
  CheckOwnerThread("Reap");
  // `done` may Queue/Submit, but a nested Reap would overwrite events_.
  if (in_reap_) return 0;
  in_reap_ = true;
  const uint64_t deadline =
      timeout_us > 0 ? MonotonicNanos() + static_cast<uint64_t>(timeout_us) * 1000 : 0;
  int n = 0;
  for (;;) {
    Submit();
    n += RunLocalCompletions();
    n += RunWorkerCompletions();
    // Requests the kernel refused (there were iocbs for them): the retry
    // wakes the completion fd.
    const bool refused = !pending_.empty() && !free_iocbs_.empty();
    if (in_kernel_ == 0 && worker_.outstanding() == 0 && !refused) {
      break;  // nothing can complete: do not wait
    }
    int want = std::max(0, min_complete - n);
    timespec ts{};
    timespec* tsp = &ts;  // zero: poll
    if (want > 0 && timeout_us >= 0) {
      const uint64_t now = MonotonicNanos();
      if (timeout_us == 0 || now >= deadline) {
        want = 0;
      } else {
        const uint64_t left = deadline - now;
        ts.tv_sec = static_cast<time_t>(left / 1000000000);
        ts.tv_nsec = static_cast<long>(left % 1000000000);
      }
    } else if (want > 0) {
      tsp = nullptr;
    }
    int min_events = 0;
    if (want > 0 && (worker_.outstanding() > 0 || refused)) {
      // Completions come from the kernel, the workers and the retry, and all
      // of them write the completion fd: wait for that, then collect.
      WaitAndDrainCompletionFd(event_fd_.get(), timeout_us < 0 ? 0 : deadline);
      // The drain consumed the fd's signal: a worker (or a callback's local
      // completion) that finished since the top of this pass must be taken
      // now, or its edge is gone and a loop waiting on the fd sleeps with it
      // done (the kernel's events below may be enough to leave this Reap).
      n += RunLocalCompletions();
      n += RunWorkerCompletions();
      ts = {};
      tsp = &ts;
    } else {
      min_events = std::min<int>(want, static_cast<int>(in_kernel_));
    }
    const int got = in_kernel_ == 0
                        ? 0
                        : io_getevents(ctx_, min_events, static_cast<long>(events_.size()),
                                       events_.data(), tsp);
    if (got < 0 && got != -EINTR) {
      TLOG_ERROR("backend", "io_getevents failed: %s", std::strerror(-got));
      break;
    }
    for (int i = 0; i < got; ++i) {
      if (OnCompletion(events_[i].obj, static_cast<long>(events_[i].res))) ++n;
    }
    if (want == 0 || n >= min_complete) break;
  }
  // Resubmitted remainders and requests queued by callbacks go out now rather
  // than waiting for the caller's next Submit.
  Submit();
  in_reap_ = false;
  return n;
}

}  // namespace tandem::backend

#include "replica-engine/backend/uring_backend.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/backend/backend_factory.h"

namespace tandem::backend {

namespace {

// io_uring's limit on SQ entries.
constexpr uint32_t kMaxDepth = 32768;

bool EnvDisablesUring() {
  const char* v = std::getenv("TANDEM_DISABLE_IO_URING");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// For before/after measurements of COOP_TASKRUN on one binary.
bool EnvDisablesCoopTaskrun() {
  const char* v = std::getenv("TANDEM_URING_NO_COOP_TASKRUN");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

constexpr uint32_t kSingleIssuerFlags =
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;

// io_uring_enable_rings is in liburing 2.3's static library but not exported
// by its shared one: the register call it makes.
int EnableRing(const io_uring& ring) {
  const long ret =
      syscall(__NR_io_uring_register, ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  return ret < 0 ? -errno : 0;
}

}  // namespace

Result<std::unique_ptr<StorageBackend>> NewUringBackend(const BackendOptions& options) {
  auto r = UringBackend::Create(options);
  if (!r.ok()) return r.status();
  return std::unique_ptr<StorageBackend>(std::move(*r));
}

Result<std::unique_ptr<UringBackend>> UringBackend::Create(const BackendOptions& options) {
  if (EnvDisablesUring()) {
    // Same shape as a seccomp / io_uring_disabled refusal, so the fallback path
    // under test is the one production takes.
    return Status::Unavailable(std::string("io_uring_setup: ") + std::strerror(EPERM) +
                               " (TANDEM_DISABLE_IO_URING set)");
  }
  std::unique_ptr<UringBackend> b(new UringBackend(options));
  TANDEM_RETURN_IF_ERROR(b->Init());
  return b;
}

UringBackend::UringBackend(const BackendOptions& options)
    : depth_(std::clamp<uint32_t>(options.queue_depth, 1, kMaxDepth)),
      want_registered_files_(options.register_files),
      want_single_issuer_(options.single_issuer) {}

Status UringBackend::Init() {
  event_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd_.valid()) return PosixError("eventfd", errno);
  worker_.SetCompletionFd(event_fd_.get());
  return SetupRing();
}

Status UringBackend::SetupRing() {
  // The setup flags, best first; a kernel that lacks one refuses with EINVAL
  // and the next is tried. SUBMIT_ALL (5.18+): an SQE that fails early posts
  // its CQE and the rest of the batch is still submitted, instead of the
  // batch stopping there. SINGLE_ISSUER + DEFER_TASKRUN (6.1+): see the
  // header; TASKRUN_FLAG makes a pending completion visible in the SQ flags
  // (CompletionsReady) and makes a peek enter the kernel to post it.
  // COOP_TASKRUN (5.19+), the fallback: a completion does not interrupt the
  // owner with an IPI to post its CQE while it runs; the CQE is posted at its
  // next kernel entry (a sleeping owner is still woken, out of epoll_wait
  // with EINTR).
  constexpr uint32_t kFlagSets[] = {
#if defined(__x86_64__)
    // QuietEventfd relies on x86-64's ordering.
    kSingleIssuerFlags | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_TASKRUN_FLAG,
#endif
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SUBMIT_ALL,
    0,
  };
  int ret = -EINVAL;
  uint32_t used = 0;
  for (uint32_t flags : kFlagSets) {
    if (!want_single_issuer_ && (flags & IORING_SETUP_SINGLE_ISSUER)) continue;
    if (EnvDisablesCoopTaskrun() && (flags & IORING_SETUP_COOP_TASKRUN)) continue;
    io_uring_params params{};
    params.flags = flags;
    ret = io_uring_queue_init_params(depth_, &ring_, &params);
    used = flags;
    if (ret != -EINVAL) break;
  }
  if (ret < 0) {
    return Status::Unavailable(std::string("io_uring_setup: ") + std::strerror(-ret));
  }
  ring_ready_ = true;
  single_issuer_ = (used & IORING_SETUP_SINGLE_ISSUER) != 0;
  issuer_ = 0;

  // Both registrations are allowed from any thread while a SINGLE_ISSUER
  // ring is still disabled.
  ret = io_uring_register_eventfd(&ring_, event_fd_.get());
  if (ret < 0) {
    return Status::Unavailable(std::string("io_uring_register_eventfd: ") + std::strerror(-ret));
  }
  if (want_registered_files_) files_.Register(&ring_);
  return Status::Ok();
}

void UringBackend::Adopt() {
  if (issuer_ != 0) {
    // Another thread was the issuer. Its ring cannot be used from here (the
    // kernel refuses a foreign task with EEXIST, and only the issuer can
    // post what the kernel finished), so a new one replaces it.
    if (in_ring_ > 0) {
      // storage_backend.h: an io_uring backend changes hands idle. What the
      // old ring holds could never complete here.
      TLOG_ERROR("backend",
                 "io_uring handed to a new thread with %u requests in the ring: the "
                 "one-thread contract requires InFlight() == 0 at a hand-over",
                 in_ring_);
      std::abort();
    }
    // Other threads queue their file-table updates from now on: they must
    // not touch ring_ while it is replaced.
    files_.BeginHandOver();
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
    Status st = SetupRing();
    if (!st.ok()) {
      // Out of memory or descriptors, or io_uring disabled since start-up:
      // nothing is left to run I/O on.
      TLOG_ERROR("backend", "io_uring: replacing the ring for a new thread failed: %s",
                 st.ToString().c_str());
      std::abort();
    }
  }
  files_.BecomeIssuer(&ring_);
  if (!single_issuer_) return;  // a replacement the kernel would not make one
  const int ret = EnableRing(ring_);
  if (ret < 0) {
    TLOG_ERROR("backend", "io_uring: enabling the ring failed: %s", std::strerror(-ret));
    std::abort();
  }
  issuer_ = ThreadSerial();
}

void UringBackend::QuietEventfd(bool quiet) {
  if (!single_issuer_) return;
  io_uring_cq_eventfd_toggle(&ring_, !quiet);
  if (quiet) return;
  // The kernel sets IORING_SQ_TASKRUN (a locked instruction on x86-64, a
  // full barrier) and then reads the eventfd flag; this thread clears the
  // flag and then reads TASKRUN, after a full fence. So one of the two sees
  // the other (why SINGLE_ISSUER is used on x86-64 only: elsewhere the
  // kernel's side has no such barrier). A completion that arrived while the
  // eventfd was quiet was not signalled, and the next one will not be either
  // (the kernel signals only its first pending completion): signal it now.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const unsigned kflags = __atomic_load_n(ring_.sq.kflags, __ATOMIC_ACQUIRE);
  if ((kflags & IORING_SQ_TASKRUN) != 0 || io_uring_cq_ready(&ring_) > 0) WakeOwner();
}

UringBackend::~UringBackend() {
  if (!ring_ready_) return;
  // Closing the ring does not wait for in-flight I/O, which could still be
  // writing into caller buffers; wait for it here (without calling `done`:
  // the owner promised InFlight() == 0). A SINGLE_ISSUER ring can be waited
  // for only by its issuer: elsewhere the wait fails with EEXIST at once.
  if (in_ring_ > 0) {
    TLOG_ERROR("backend", "io_uring backend destroyed with %u requests in the ring", in_ring_);
  }
  if (io_uring_sq_ready(&ring_) > 0) io_uring_submit(&ring_);
  while (in_ring_ > 0) {
    io_uring_cqe* cqe = nullptr;
    const int ret = io_uring_wait_cqe(&ring_, &cqe);
    if (ret == -EINTR) continue;
    if (ret < 0) break;
    if (cqe->user_data != LIBURING_UDATA_TIMEOUT) --in_ring_;
    io_uring_cqe_seen(&ring_, cqe);
  }
  io_uring_queue_exit(&ring_);
}

Result<int> UringBackend::OpenFile(const char* path, bool create) {
  // 0600: a replica's data is a tenant's; no other local user may read it.
  const int fd = ::open(path, O_RDWR | O_DIRECT | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (fd < 0) return PosixError(std::string("open ") + path, errno);
  if (files_.Add(&ring_, fd)) WakeOwner();
  return fd;
}

void UringBackend::CloseFile(int fd) {
  if (fd < 0) return;
  if (files_.Remove(&ring_, fd)) WakeOwner();
  ::close(fd);
}

void UringBackend::WakeOwner() {
  // The owner's loop comes back for the completion fd and applies the queued
  // file-table update in its Reap.
  eventfd_write(event_fd_.get(), 1);
}

void UringBackend::Queue(IoRequest* req) {
  CheckOwnerThread("Queue");
  AdoptIfForeign();
  if (!Admit(req)) return;
  Enqueue(req);
}

void UringBackend::Enqueue(IoRequest* req) {
  // FIFO: nothing overtakes requests already waiting for room.
  if (overflow_.empty() && in_ring_ < depth_) {
    PrepSqe(req);
  } else {
    overflow_.PushBack(req);
  }
}

void UringBackend::PrepSqe(IoRequest* req) {
  // in_ring_ < depth_ <= SQ size, and Submit() empties the SQ, so a slot exists.
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // Only if the kernel refused an earlier submit and left the SQ full.
    overflow_.PushBack(req);
    return;
  }
  int fd = req->fd;
  uint8_t sqe_flags = 0;
  if (const int32_t slot = files_.SlotOf(fd); slot >= 0) {
    fd = slot;
    sqe_flags = IOSQE_FIXED_FILE;
  }
  const uint32_t done = req->done_bytes_;
  switch (req->op) {
    case IoOp::kRead:
      io_uring_prep_read(sqe, fd, static_cast<char*>(req->buf) + done, req->length - done,
                         req->offset + done);
      break;
    case IoOp::kWrite:
      io_uring_prep_write(sqe, fd, static_cast<char*>(req->buf) + done, req->length - done,
                          req->offset + done);
      if (req->flags & kFlagFua) sqe->rw_flags = RWF_DSYNC;
      break;
    case IoOp::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case IoOp::kDiscard:
      io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              static_cast<off_t>(req->offset), req->length);
      break;
    case IoOp::kWriteZeroes:
      io_uring_prep_fallocate(sqe, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                              static_cast<off_t>(req->offset), req->length);
      break;
    case IoOp::kNop:  // not reached: completed locally by Queue()
      io_uring_prep_nop(sqe);
      break;
  }
  sqe->flags |= sqe_flags;
  io_uring_sqe_set_data(sqe, req);
  ++in_ring_;
}

void UringBackend::FillFromOverflow() {
  while (!overflow_.empty() && in_ring_ < depth_ && io_uring_sq_space_left(&ring_) > 0) {
    PrepSqe(overflow_.PopFront());
  }
}

bool UringBackend::OnCompletion(IoRequest* req, int32_t res) {
  --in_ring_;
  if (res == -EAGAIN) {
    Enqueue(req);
    return false;
  }
  if (res < 0) {
    Finish(req, res);
    return true;
  }
  switch (req->op) {
    case IoOp::kRead:
    case IoOp::kWrite:
      req->done_bytes_ += static_cast<uint32_t>(res);
      if (req->done_bytes_ < req->length) {
        if (res > 0) {
          Enqueue(req);  // short transfer: the remainder goes again
          return false;
        }
        // 0 bytes: a read reached EOF (report what we have); a write making no
        // progress would loop forever.
        Finish(req, req->op == IoOp::kRead ? static_cast<int32_t>(req->done_bytes_) : -EIO);
        return true;
      }
      Finish(req, static_cast<int32_t>(req->done_bytes_));
      return true;
    case IoOp::kFlush:
    case IoOp::kNop:
      Finish(req, 0);
      return true;
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      Finish(req, static_cast<int32_t>(req->length));
      return true;
  }
  Finish(req, -EINVAL);
  return true;
}

int UringBackend::DrainCompletions() {
  constexpr unsigned kBatch = 64;
  // Bounded: a reap never runs away with the loop under a completion storm.
  constexpr int kMaxTaskrunRounds = 16;
  int taskrun_rounds = 0;
  int n = 0;
  for (;;) {
    io_uring_cqe* cqes[kBatch];
    const unsigned got = io_uring_peek_batch_cqe(&ring_, cqes, kBatch);
    if (got == 0) break;
    // Copy out and release the CQ slots before any `done` runs, so callbacks
    // that queue and submit more I/O see a consistent ring.
    uint64_t data[kBatch];
    int32_t res[kBatch];
    for (unsigned i = 0; i < got; ++i) {
      data[i] = cqes[i]->user_data;
      res[i] = cqes[i]->res;
    }
    io_uring_cq_advance(&ring_, got);
    for (unsigned i = 0; i < got; ++i) {
      // liburing's own timeout SQE, used only on kernels without EXT_ARG.
      if (data[i] == LIBURING_UDATA_TIMEOUT) continue;
      if (OnCompletion(reinterpret_cast<IoRequest*>(data[i]), res[i])) ++n;
    }
    if (got == kBatch) continue;
    // DEFER_TASKRUN: the kernel posts at most a few dozen deferred
    // completions per entry and flags the rest (IORING_SQ_TASKRUN): take
    // those too, rather than leaving them for another pass of the loop.
    if (!single_issuer_ || ++taskrun_rounds > kMaxTaskrunRounds) break;
    const unsigned kflags = __atomic_load_n(ring_.sq.kflags, __ATOMIC_ACQUIRE);
    if ((kflags & IORING_SQ_TASKRUN) == 0) break;
  }
  return n;
}

int UringBackend::Enter(unsigned wait_nr, __kernel_timespec* ts) {
  const bool submitting = io_uring_sq_ready(&ring_) > 0;
  int ret = 0;
  if (submitting && TakeInjectedSubmitFailure(&ret)) {
    // Refused as the kernel refuses: nothing submitted, nothing waited for.
  } else if (wait_nr > 0) {
    io_uring_cqe* cqe = nullptr;
    // One syscall submits the batch and waits for `wait_nr` completions.
    ret = io_uring_submit_and_wait_timeout(&ring_, &cqe, wait_nr, ts, nullptr);
  } else if (submitting) {
    ret = io_uring_submit(&ring_);
  }
  if (submitting) {
    // On a refusal (-EAGAIN/-EBUSY/-EINTR) the SQEs stay in the ring and go
    // with the next Submit/Reap; the retry makes sure one comes.
    if (io_uring_sq_ready(&ring_) > 0) {
      worker_.ArmSubmitRetry();
    } else {
      worker_.SubmitAccepted();
    }
  }
  return ret;
}

int UringBackend::Submit() {
  CheckOwnerThread("Submit");
  AdoptIfForeign();
  files_.ApplyQueued(&ring_);
  FillFromOverflow();
  if (io_uring_sq_ready(&ring_) == 0) return 0;
  const int ret = Enter(0, nullptr);
  return ret > 0 ? ret : 0;
}

bool UringBackend::CompletionsReady() const {
  if (in_ring_ == 0) return false;
  // CQEs in the ring, or (TASKRUN_FLAG) task work the kernel has queued to
  // post some: DrainCompletions' peek flushes it with one io_uring_enter.
  const unsigned kflags = __atomic_load_n(ring_.sq.kflags, __ATOMIC_ACQUIRE);
  return io_uring_cq_ready(&ring_) > 0 ||
         (kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

int UringBackend::Reap(int min_complete, int64_t timeout_us) {
  CheckOwnerThread("Reap");
  // `done` may Queue/Submit, but a nested Reap would reorder completions.
  if (in_reap_) return 0;
  AdoptIfForeign();
  files_.ApplyQueued(&ring_);
  in_reap_ = true;
  const uint64_t deadline =
      timeout_us > 0 ? MonotonicNanos() + static_cast<uint64_t>(timeout_us) * 1000 : 0;
  int n = 0;
  for (;;) {
    FillFromOverflow();
    n += RunLocalCompletions();
    if (in_ring_ == 0) break;  // nothing can complete: do not wait
    int want = std::max(0, min_complete - n);
    want = std::min<int>(want, static_cast<int>(in_ring_));
    __kernel_timespec ts{};
    __kernel_timespec* tsp = nullptr;
    if (want > 0 && timeout_us >= 0) {
      const uint64_t now = MonotonicNanos();
      if (timeout_us == 0 || now >= deadline) {
        want = 0;
      } else {
        const uint64_t left = deadline - now;
        ts.tv_sec = static_cast<int64_t>(left / 1000000000);
        ts.tv_nsec = static_cast<long long>(left % 1000000000);
        tsp = &ts;
      }
    }
    QuietEventfd(true);
    const int ret = Enter(static_cast<unsigned>(want), tsp);
    n += DrainCompletions();
    QuietEventfd(false);
    if (want == 0 || n >= min_complete) break;
    if (io_uring_sq_ready(&ring_) > 0) {
      // The submission was refused, so nothing was waited for. What the
      // kernel has and the retry both write the completion fd: wait for it.
      WaitAndDrainCompletionFd(event_fd_.get(), timeout_us < 0 ? 0 : deadline);
      continue;
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
      TLOG_ERROR("backend", "io_uring wait failed: %s", std::strerror(-ret));
      break;
    }
  }
  // Resubmitted remainders and requests queued by callbacks go out now rather
  // than waiting for the caller's next Submit.
  Submit();
  in_reap_ = false;
  return n;
}

}  // namespace tandem::backend

#pragma once
// StorageBackend: asynchronous block I/O against files opened with O_DIRECT.
//
// One interface, two implementations beside it: UringBackend (liburing) and
// AioBackend (libaio). BackendFactory::Create("auto") picks io_uring and falls
// back to libaio when a ring cannot be created (seccomp, kernel.io_uring_disabled).
//
// The submit/complete idiom (liburing examples, fio's queue/commit split):
//   backend->Queue(&req1); backend->Queue(&req2);   // no syscall
//   backend->Submit();                              // one syscall for the batch
//   backend->Reap(min, timeout);                    // runs req->done for each completion
//
// Contract
// - Queue/Submit/Reap/InFlight belong to one thread (an event loop): use one
//   backend per thread. (A backend may run helper threads of its own, see
//   below; they never call `done`, and touch a request only to run its
//   syscall and record the result.) OpenFile/CloseFile may be called from any
//   thread (they serialise internally), so a management thread can add
//   replicas.
//   Debug builds (no NDEBUG) enforce this for Queue/Submit/Reap: the first call
//   binds the backend to the calling thread (its owner), and a call from any
//   other thread while the owner is still running aborts with a message naming
//   this contract. Handing a backend over therefore works as is when the old
//   owner is gone: a backend created (and even used) on one thread and then
//   used only by a loop thread, or a server stopped (thread joined) and started
//   again on the same backend, binds to the new thread at its first call. A
//   live owner that is done with the backend hands it over explicitly:
//   DetachFromThread() on the old owner, or BindToCurrentThread() on the new
//   one (either way the old owner's last call must happen-before the new
//   owner's first, e.g. through a join or a mutex), and the backend must be
//   idle: InFlight() == 0 (an io_uring ring's completions can be reaped only
//   by the thread that submitted them; a hand-over with requests in the
//   ring aborts with a message). With NDEBUG the check compiles away (no
//   per-I/O cost).
// - Queue() never fails and never blocks. A request the kernel queue has no room
//   for waits inside the backend and is submitted by a later Submit()/Reap();
//   it is never failed for lack of room.
// - A submission the kernel refuses (io_uring_enter -EAGAIN/-EBUSY, io_submit
//   -EAGAIN: out of memory or resources) is not an error either: the requests
//   stay queued, and the backend itself makes CompletionFd() readable again
//   after a short backoff (1 ms, doubling to 64 ms while refusals continue),
//   so an owner loop sleeping in epoll comes back and its Reap() submits
//   again, even when nothing else is in flight to wake it. The owner needs no
//   timer of its own. A blocking Reap() waits through refusals the same way.
// - Every queued request completes exactly once: `done(req)` is called from
//   Reap() (never from Queue/Submit) with req->result set to the number of bytes
//   transferred (== length) or a negative errno. Short transfers are resubmitted
//   for the remainder by the backend, so `done` sees a short count only at end
//   of file (a read of a range that crosses EOF reports the bytes up to EOF;
//   a read starting at/after EOF reports 0). On success kDiscard and
//   kWriteZeroes report `length`, kFlush reports 0.
// - `done` may call Queue() and Submit() (e.g. to issue the next I/O); such
//   requests complete in a later Reap(). A Reap() nested inside `done` returns
//   0 without doing anything. InFlight() inside `done` no longer counts the
//   request being completed.
// - The IoRequest and its buffer are owned by the caller and must stay alive and
//   untouched until `done` runs. Nothing is allocated per request.
// - Alignment: kRead/kWrite need buf, offset and length aligned to
//   kDirectIoAlignment (O_DIRECT); a misaligned request completes with -EINVAL
//   without reaching the kernel (so does length 0, or fd < 0 with -EBADF).
//   kDiscard/kWriteZeroes need only offset and length aligned (length > 0).
//   kFlush ignores offset/length/buf.
// - kDiscard punches a hole (space is released; reads return zeroes).
//   kWriteZeroes makes the range read as zeroes (FALLOC_FL_ZERO_RANGE on files,
//   BLKZEROOUT semantics on devices). io_uring runs them as IORING_OP_FALLOCATE;
//   libaio has no async fallocate (nor a usable async fdatasync), so it hands
//   them and kFlush at Submit() to worker threads that run only the syscall
//   (BackendWorker); the owner thread never blocks on them, and they complete
//   through Reap() on the owner thread like everything else.
// - kFlush is fdatasync(2) of the file. It makes durable every write whose
//   `done` ran before the flush was queued (block-layer flush semantics); it
//   does not order against writes still in flight.
//   kFlagFua on a write makes it durable before completion (RWF_DSYNC).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "common/intrusive_list.h"
#include "common/result.h"
#include "common/thread_annotations.h"

namespace tandem::backend {

inline constexpr uint32_t kDirectIoAlignment = 4096;

// kNop does no I/O: it completes with result 0 through Reap(), like any
// request, ignoring fd/offset/length/buf. It lets a layer above answer a
// request that needs no disk I/O (a MARK_DIRTY whose bits are durable) on
// the same completion path as those that do.
enum class IoOp : uint8_t {
  kRead = 0,
  kWrite = 1,
  kFlush = 2,
  kDiscard = 3,
  kWriteZeroes = 4,
  kNop = 5,
};

const char* IoOpName(IoOp op);

inline constexpr uint32_t kFlagFua = 1u << 0;

struct IoRequest;
using IoDoneFn = void (*)(IoRequest* req);

// One block I/O. Preallocated by the layer above (free list, per-connection
// slot table), never by the backend.
struct IoRequest {
  IoOp op = IoOp::kRead;
  uint32_t flags = 0;   // kFlagFua
  int fd = -1;          // a file opened with OpenFile()
  uint64_t offset = 0;  // bytes
  uint32_t length = 0;  // bytes
  void* buf = nullptr;  // kRead/kWrite only; aligned
  int32_t result = 0;   // out: bytes transferred or -errno
  IoDoneFn done = nullptr;
  void* ctx = nullptr;  // caller's

  // Backend-private scratch; do not touch while queued.
  uint32_t done_bytes_ = 0;
  IoRequest* next_ = nullptr;
};

// A FIFO of requests linked through IoRequest::next_ (no allocation), for
// the backends' own queues.
using IoRequestQueue = IntrusiveQueue<IoRequest, &IoRequest::next_>;

struct BackendOptions {
  // Kernel queue depth (io_uring entries / aio nr_events).
  uint32_t queue_depth = 256;
  // io_uring: register the file table (IORING_REGISTER_FILES) so each request
  // skips the fd lookup.
  bool register_files = true;
  // io_uring: a SINGLE_ISSUER + DEFER_TASKRUN ring where the kernel has them
  // (uring_backend.h); else COOP_TASKRUN. Off by default: on this project's
  // 2-vCPU benchmark machine it measured neutral (docs/performance.md, "io_uring
  // flags of the backend ring"). tandem-engine --io-uring-defer-taskrun=on.
  bool single_issuer = false;
  // libaio: threads that run flush / discard / write-zeroes (fdatasync,
  // fallocate) off the owner loop; two, so one slow flush does not hold up
  // another volume's. 1..16.
  uint32_t aio_sync_threads = 2;
};

class StorageBackend {
 public:
  virtual ~StorageBackend() = default;
  StorageBackend(const StorageBackend&) = delete;
  StorageBackend& operator=(const StorageBackend&) = delete;

  // "io_uring" or "libaio".
  virtual const char* Name() const = 0;

  // Opens `path` for direct I/O (O_RDWR | O_DIRECT; O_CREAT, mode 0600, when
  // create) and
  // returns a descriptor usable in IoRequest::fd. Block devices are accepted.
  // The backend may register it with the kernel; CloseFile() releases it.
  // REQUIRES: no request on this fd is in flight at CloseFile().
  virtual Result<int> OpenFile(const char* path, bool create) = 0;
  virtual void CloseFile(int fd) = 0;

  // Adds a request to the next batch. See the contract above.
  virtual void Queue(IoRequest* req) = 0;
  // Hands every queued request the kernel has room for to the kernel in one
  // call. Returns the number handed over.
  virtual int Submit() = 0;
  // Submits anything queued, then waits until at least `min_complete`
  // completions are available or `timeout_us` passes (-1: no limit; 0: poll),
  // and runs `done` for every available completion. Returns how many ran.
  virtual int Reap(int min_complete, int64_t timeout_us) = 0;

  // An eventfd that becomes readable when completions are pending, for
  // integration with an epoll loop; the loop then calls Reap(0, 0). Every
  // signal is a write to the eventfd, so each one is a new edge: a loop that
  // registers it edge-triggered (EPOLLET) need not read it at all; a
  // level-triggered one must read (drain) it before calling Reap.
  virtual int CompletionFd() const = 0;

  // Owner thread, no syscall: whether completions are waiting for Reap()
  // (completion entries posted, or completion work the kernel runs at the
  // owner's next syscall). An epoll owner checks it before it sleeps: a
  // completion that woke the thread out of epoll_wait with EINTR (io_uring's
  // task work) is then reaped at once, not after another epoll_wait for the
  // eventfd. False when the backend cannot tell; CompletionFd() still fires.
  virtual bool CompletionsReady() const { return false; }

  // Requests queued or in the kernel and not yet completed.
  virtual uint32_t InFlight() const = 0;

  // The one-thread contract (see the top of this file). BindToCurrentThread()
  // makes the calling thread the owner now; DetachFromThread() unbinds, so the
  // next Queue/Submit/Reap binds whichever thread makes it. Neither checks
  // anything: the caller vouches that the previous owner is done.
  void BindToCurrentThread();
  void DetachFromThread();
  // Whether this build enforces the contract (false when built with NDEBUG).
  static bool ChecksOwnerThread();

  // Test seam (owner thread): the next `count` submissions to the kernel (each
  // io_uring_enter / io_submit call that would hand over requests) fail with
  // `error` (a negative errno such as -EAGAIN or -EBUSY) without reaching the
  // kernel, as a kernel out of resources refuses them. count 0 clears it.
  void FailNextSubmitsForTesting(int error, int count) {
    injected_submit_error_ = error;
    injected_submit_failures_ = count;
  }

 protected:
  StorageBackend() = default;

  // In the backends' submit paths: true, with *error set, when an injected
  // failure is due (see FailNextSubmitsForTesting).
  bool TakeInjectedSubmitFailure(int* error) {
    if (injected_submit_failures_ <= 0) return false;
    --injected_submit_failures_;
    *error = injected_submit_error_;
    return true;
  }

  // First thing in Queue/Submit/Reap. Debug builds: binds the owner at the
  // first call, aborts on a call from another thread while the owner runs.
  // NDEBUG builds: nothing.
  void CheckOwnerThread(const char* call) {
#ifndef NDEBUG
    if (owner_.load(std::memory_order_relaxed) != CurrentThreadToken().get()) OwnerMismatch(call);
#else
    (void)call;
#endif
  }

 private:
  // One per thread that has touched a backend; `alive` turns false when the
  // thread exits.
  struct ThreadToken;
  static const std::shared_ptr<ThreadToken>& CurrentThreadToken();
  // Slow path of CheckOwnerThread: binds when unbound or when the owner has
  // exited, else aborts.
  void OwnerMismatch(const char* call);

  int injected_submit_error_ = 0;     // owner thread
  int injected_submit_failures_ = 0;  // owner thread

  std::atomic<ThreadToken*> owner_{nullptr};
  Mutex owner_mu_;
  // Keeps the owner's token (and so its address) alive while bound.
  std::shared_ptr<ThreadToken> owner_ref_ GUARDED_BY(owner_mu_);
};

}  // namespace tandem::backend

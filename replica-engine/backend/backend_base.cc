#include "replica-engine/backend/backend_base.h"

#include <sys/eventfd.h>

namespace tandem::backend {
namespace {

// The kernel's limit on one read/write transfer (MAX_RW_COUNT).
constexpr uint32_t kMaxTransfer = 0x7ffff000;

// 0 when `req` may go to the kernel, else the -errno it completes with.
int32_t CheckRequest(const IoRequest& req) {
  if (req.op == IoOp::kNop) return 0;  // needs no file
  if (req.fd < 0) return -EBADF;
  switch (req.op) {
    case IoOp::kRead:
    case IoOp::kWrite:
      if (req.buf == nullptr || req.length == 0 || req.length > kMaxTransfer ||
          (reinterpret_cast<uintptr_t>(req.buf) | req.offset | req.length) % kDirectIoAlignment)
        return -EINVAL;
      return 0;
    case IoOp::kFlush:
      return 0;
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      if (req.length == 0 || (req.offset | req.length) % kDirectIoAlignment) return -EINVAL;
      return 0;
    case IoOp::kNop:
      return 0;  // not reached: returned above
  }
  return -EINVAL;
}

}  // namespace

bool BackendBase::Admit(IoRequest* req) {
  ++in_flight_;
  req->done_bytes_ = 0;
  req->result = 0;
  const int32_t err = CheckRequest(*req);
  if (err != 0 || req->op == IoOp::kNop) {
    CompleteLocally(req, err);  // kNop: 0, through Reap() like the rest
    return false;
  }
  return true;
}

void BackendBase::CompleteLocally(IoRequest* req, int32_t result) {
  req->result = result;
  const bool was_empty = local_done_.empty();
  local_done_.PushBack(req);
  // The epoll loop only calls Reap when the eventfd fires; make sure it does.
  if (was_empty) eventfd_write(event_fd_.get(), 1);
}

int BackendBase::RunLocalCompletions() {
  // Detach first: a `done` that queues another invalid request adds to a fresh
  // list, completed by the next Reap, so this loop always terminates.
  RequestList list;
  list.SpliceBack(&local_done_);
  int n = 0;
  while (IoRequest* req = list.PopFront()) {
    Finish(req, req->result);
    ++n;
  }
  return n;
}

void BackendBase::Finish(IoRequest* req, int32_t result) {
  req->result = result;
  --in_flight_;
  if (req->done != nullptr) req->done(req);
}

}  // namespace tandem::backend

#pragma once
// GateBackend (tests): a StorageBackend that forwards to a real one, except
// that while the gate is closed it holds one kind of write back from the
// kernel, so a test can keep it "in flight" on the server for as long as it
// needs:
//   kDataWrites  kWrite without FUA (application data, not metadata persists)
//   kFuaWrites   kWrite with FUA (the replicas' metadata persists)
// Queue/Submit/Reap run on the server's loop thread; Close()/Open() on the
// test thread (Open wakes the loop through the completion eventfd; held
// writes go to the real backend at the next Submit/Reap).

#include <unistd.h>

#include <atomic>
#include <memory>
#include <vector>

#include "replica-engine/backend/storage_backend.h"

namespace tandem::server::testing {

class GateBackend final : public backend::StorageBackend {
 public:
  enum class Holds { kDataWrites, kFuaWrites };

  GateBackend(std::unique_ptr<backend::StorageBackend> inner, Holds holds)
      : inner_(std::move(inner)), holds_(holds) {}
  void Close() { closed_.store(true); }
  void Open() {
    closed_.store(false);
    uint64_t one = 1;
    (void)!::write(inner_->CompletionFd(), &one, sizeof(one));
  }
  uint32_t held() const { return held_count_.load(); }

  const char* Name() const override { return inner_->Name(); }
  Result<int> OpenFile(const char* path, bool create) override {
    return inner_->OpenFile(path, create);
  }
  void CloseFile(int fd) override { inner_->CloseFile(fd); }
  void Queue(backend::IoRequest* req) override {
    if (closed_.load() && Gated(*req)) {
      held_.push_back(req);
      held_count_.store(static_cast<uint32_t>(held_.size()));
      return;
    }
    inner_->Queue(req);
  }
  int Submit() override {
    Release();
    return inner_->Submit();
  }
  int Reap(int min_complete, int64_t timeout_us) override {
    Release();
    return inner_->Reap(min_complete, timeout_us);
  }
  int CompletionFd() const override { return inner_->CompletionFd(); }
  uint32_t InFlight() const override { return inner_->InFlight() + held_count_.load(); }

 private:
  bool Gated(const backend::IoRequest& req) const {
    if (req.op != backend::IoOp::kWrite) return false;
    const bool fua = (req.flags & backend::kFlagFua) != 0;
    return holds_ == Holds::kFuaWrites ? fua : !fua;
  }
  void Release() {
    if (closed_.load() || held_.empty()) return;
    for (backend::IoRequest* r : held_) inner_->Queue(r);
    held_.clear();
    held_count_.store(0);
  }

  std::unique_ptr<backend::StorageBackend> inner_;
  const Holds holds_;
  std::atomic<bool> closed_{false};
  std::vector<backend::IoRequest*> held_;  // loop thread only
  std::atomic<uint32_t> held_count_{0};
};

}  // namespace tandem::server::testing

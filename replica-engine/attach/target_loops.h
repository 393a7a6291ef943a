#pragma once
// TargetLoops: the event loops TargetManager runs its targets on
// (tandem-engine --target-threads=N). Loop 0 is the loop the manager is given
// (the replica server's, --target-loop=server) or a thread of its own
// (--target-loop=own); loops 1..N-1 are always threads of their own. A new
// volume goes to the loop with the fewest targets (ties: the lowest index) and
// stays there for its life: a volume's target, its replica channels and its
// export share one thread (no hand-off on its I/O path), while a node with
// many cores serves many volumes in parallel.
//
// Thread-safety: Acquire/Release/Loads from any thread; size(), loop(i) and
// is_given(i) are fixed at construction.

#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"

namespace tandem::attach {

class TargetLoops {
 public:
  // The most loops a manager runs (tandem-engine --target-threads bound).
  static constexpr size_t kMaxLoops = 64;

  // `given`: loop 0 (null: a thread of our own). `count`: 1..kMaxLoops
  // (clamped).
  TargetLoops(EventLoop* given, size_t count);
  ~TargetLoops();  // stops and joins the threads of our own
  TargetLoops(const TargetLoops&) = delete;
  TargetLoops& operator=(const TargetLoops&) = delete;

  // Starts the threads of our own; non-OK if a loop could not be created.
  // Once only.
  Status Start();

  size_t size() const { return slots_.size(); }
  EventLoop* loop(size_t i) const { return slots_[i].loop; }
  // Loop i is the given one (not ours to run or stop).
  bool is_given(size_t i) const { return slots_[i].own == nullptr; }

  // The loop with the fewest targets (ties: the lowest index), now counting
  // one more; the caller Releases it when the target is gone (or never made).
  size_t Acquire();
  void Release(size_t i);
  // Targets counted on each loop.
  std::vector<size_t> Loads() const;

 private:
  struct Slot {
    std::unique_ptr<EventLoop> own;  // null for the given loop
    EventLoop* loop = nullptr;
    std::thread thread;
    size_t targets = 0;  // guarded by mu_
  };
  std::vector<Slot> slots_;
  mutable std::mutex mu_;
};

}  // namespace tandem::attach

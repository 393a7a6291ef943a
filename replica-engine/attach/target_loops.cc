#include "replica-engine/attach/target_loops.h"

#include <algorithm>

namespace tandem::attach {

TargetLoops::TargetLoops(EventLoop* given, size_t count)
    : slots_(std::clamp<size_t>(count, 1, kMaxLoops)) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (i == 0 && given != nullptr) {
      s.loop = given;
    } else {
      s.own = std::make_unique<EventLoop>();
      s.loop = s.own.get();
    }
  }
}

TargetLoops::~TargetLoops() {
  for (Slot& s : slots_) {
    if (!s.thread.joinable()) continue;
    s.own->Stop();
    s.thread.join();
  }
}

Status TargetLoops::Start() {
  for (const Slot& s : slots_) {
    if (!s.loop->init_status().ok()) return s.loop->init_status();
  }
  for (Slot& s : slots_) {
    if (s.own) s.thread = std::thread([loop = s.own.get()] { loop->Run(); });
  }
  return Status::Ok();
}

size_t TargetLoops::Acquire() {
  std::lock_guard<std::mutex> l(mu_);
  size_t best = 0;
  for (size_t i = 1; i < slots_.size(); ++i) {
    if (slots_[i].targets < slots_[best].targets) best = i;
  }
  ++slots_[best].targets;
  return best;
}

void TargetLoops::Release(size_t i) {
  std::lock_guard<std::mutex> l(mu_);
  if (slots_[i].targets > 0) --slots_[i].targets;
}

std::vector<size_t> TargetLoops::Loads() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<size_t> out;
  for (const Slot& s : slots_) out.push_back(s.targets);
  return out;
}

}  // namespace tandem::attach

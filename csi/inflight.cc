#include "csi/inflight.h"

#include <utility>

namespace tandem::csi {

InFlight::Guard::~Guard() {
  if (owner_ != nullptr) owner_->Release(key_);
}

Result<InFlight::Guard> InFlight::TryAcquire(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!keys_.insert(key).second) {
    return Status::Aborted("an operation for " + key +
                           " is already in progress; retry when it has finished");
  }
  return Guard(this, key);
}

bool InFlight::Contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_.count(key) != 0;
}

void InFlight::Release(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  keys_.erase(key);
}

}  // namespace tandem::csi

#pragma once
// Registration: tandem-node tells the controller that this node exists (node
// id, the address of its engine's management API, topology labels). The
// controller then polls that engine as the node's heartbeat; the data path
// never depends on the controller being up.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace tandem::node {

struct RegistrationInfo {
  std::string controller_endpoint;  // the controller's Registration API
  std::string node_id;
  std::string engine_address;  // how the controller reaches this node's engine
  std::map<std::string, std::string> topology;
};

// One RegisterNode call (idempotent on the controller's side).
Status RegisterOnce(const RegistrationInfo& info, std::chrono::milliseconds timeout);

// Registers in the background, retrying every `retry` until it succeeds or
// Stop(): a node plugin may start before the controller does.
class Registrar {
 public:
  Registrar(RegistrationInfo info, std::chrono::milliseconds retry);
  ~Registrar() { Stop(); }
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;
  void Stop();
  bool registered() const { return registered_.load(); }

 private:
  RegistrationInfo info_;
  std::chrono::milliseconds retry_;
  std::atomic<bool> registered_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace tandem::node

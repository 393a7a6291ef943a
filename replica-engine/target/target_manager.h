#pragma once
// TargetManager: the volume targets attached on this node, each exported by an
// NBD server. Owns one event-loop thread on which every target, its replica
// clients and its NBD server run.
//
// Thread-safety: every method may be called from any thread (the gRPC
// management threads); work is posted to the loop and the call waits for it.
// Create/Destroy are idempotent.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "common/result.h"
#include "replica-engine/target/volume_target.h"

namespace tandem::target {

struct TargetSpec {
  TargetOptions options;  // volume id, epoch, token, replicas, size, timeouts
  // NBD export: the unix socket is <socket_dir>/<volume_id>.sock; TCP is
  // optional ("host:port", port 0 = any; empty = none).
  std::string nbd_tcp_address;
  // How long Create waits for the target to leave kStarting.
  uint32_t ready_timeout_ms = 10000;
};

struct TargetInfo {
  std::string volume_id;
  std::string nbd_socket;  // unix socket path
  uint16_t nbd_tcp_port = 0;
  uint64_t epoch = 0;
  TargetStatus status;
};

class TargetManager {
 public:
  // `socket_dir` holds the NBD unix sockets (created if missing).
  explicit TargetManager(std::string socket_dir);
  ~TargetManager();  // destroys every target

  // Starts the loop thread. Non-OK if the loop cannot be created.
  Status Start();

  // Creates a target and its NBD export and waits until it is ready (at least
  // one HEALTHY replica) or `ready_timeout_ms` passes.
  // - Same volume, same epoch and replicas: returns the existing target (idempotent).
  // - Same volume, different spec: ALREADY_EXISTS.
  // - No replica reachable in time: UNAVAILABLE, nothing left behind.
  Result<TargetInfo> Create(const TargetSpec& spec);
  // Flushes and shuts down the target and its export. OK if absent.
  Status Destroy(const std::string& volume_id);
  Result<TargetInfo> Get(const std::string& volume_id);
  std::vector<TargetInfo> List();
  // Destroys every target (engine shutdown).
  void Shutdown();

 private:
  struct Entry;
  TargetInfo InfoOf(const Entry& e) const;
  void DestroyEntry(std::unique_ptr<Entry> entry);

  std::string socket_dir_;
  EventLoop loop_;
  std::thread thread_;
  std::mutex mu_;                                          // serialises Create/Destroy
  std::map<std::string, std::unique_ptr<Entry>> targets_;  // loop thread only
  bool started_ = false;
};

}  // namespace tandem::target

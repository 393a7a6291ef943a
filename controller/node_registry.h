#pragma once
// NodeRegistry: the nodes the controller knows (persisted NodeRecords) and
// their liveness (in memory only).
//
// Liveness is the engine's GetEngineInfo, polled every heartbeat_interval by
// one thread: a node is up while its last successful poll is younger than
// `grace`. Nothing on the data path depends on the controller: engines are
// polled, they never call in (except the membership authority, later).
// A node registered again with the same fields is a no-op write.
//
// Thread-safety: every public method may be called concurrently.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "controller/engine_directory.h"
#include "controller/records.h"

namespace tandem::controller {

struct NodeRegistryOptions {
  std::chrono::milliseconds heartbeat_interval{2000};
  // A node whose engine has not answered for this long is down.
  std::chrono::milliseconds grace{10000};
  std::chrono::milliseconds rpc_timeout{1500};
};

struct NodeView {
  rec::NodeRecord record;
  bool up = false;
  // From the last successful heartbeat.
  epb::EngineInfo info;
  // -1: never seen.
  int64_t last_seen_ms_ago = -1;
  std::string last_error;
};

class NodeRegistry {
 public:
  NodeRegistry(Records* records, EngineDirectory* engines, NodeRegistryOptions options);
  ~NodeRegistry();  // Stop()
  NodeRegistry(const NodeRegistry&) = delete;
  NodeRegistry& operator=(const NodeRegistry&) = delete;

  // Reads the registered nodes from the store (at start and on becoming leader).
  Status Load();
  // Persists the node (leader only), then polls it once so it can be used at
  // once when its engine answers. INVALID_ARGUMENT for a bad id or address.
  Status Register(const rec::NodeRecord& record);
  // Starts / stops the heartbeat thread.
  void Start();
  void Stop();
  // One heartbeat round over every node, now (also used by Start's thread).
  void PollAll();
  // Polls the nodes not polled since they were loaded or registered, so a
  // controller that just started (or just became leader) does not take
  // nodes it has not asked yet for down ones.
  void PollUnseen();

  std::vector<NodeView> Snapshot() const;
  std::optional<NodeView> Get(const std::string& node_id) const;

 private:
  struct Entry {
    rec::NodeRecord record;
    epb::EngineInfo info;
    std::chrono::steady_clock::time_point last_seen{};  // epoch: never
    std::string last_error;
    bool polled = false;  // at least one heartbeat attempt since loaded
  };
  void PollOne(const std::string& node_id, const std::string& address);
  NodeView ViewOf(const Entry& e, std::chrono::steady_clock::time_point now) const;

  Records* const records_;
  EngineDirectory* const engines_;
  const NodeRegistryOptions options_;

  mutable std::mutex mu_;
  std::map<std::string, Entry> nodes_;  // GUARDED_BY(mu_)
  bool stop_ = false;                   // GUARDED_BY(mu_)
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace tandem::controller

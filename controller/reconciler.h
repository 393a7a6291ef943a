#pragma once
// Reconciler: the controller's self-healing loop. Every `interval`, while
// this instance leads, it walks the volume records and
//   - replaces a replica whose node has been down for `replace_after`: a new
//     replica is placed on another node (placement.h, the volume's current
//     nodes excluded), created on its engine, swapped into the record, and,
//     when the volume is published, swapped into the live target on the
//     attached node (RemoveTargetReplica of the dead one first, so the
//     target's quorum never counts it, then AddTargetReplica: the new replica
//     receives every write at once and is rebuilt online);
//   - deletes retired replicas (replaced ones) once their node answers again;
//   - adds a replica of the record that the attachment's live target has
//     lacked for `replace_after` back to it (a shrink abandoned after the
//     target dropped its victims).
// Rebuild admission: at most `max_rebuilds_per_node` replacements land on
// one node per `admission_window`; the rest wait for a later pass, so a node
// loss does not start a rebuild storm on the survivors.
//
// Thread-safety: Start/Stop from one thread; RunOnce must not run
// concurrently with itself (the thread is the only caller in production).

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "controller/engine_directory.h"
#include "controller/node_registry.h"
#include "controller/records.h"
#include "csi/inflight.h"

namespace tandem::controller {

struct ReconcilerOptions {
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds replace_after{60000};
  uint32_t max_rebuilds_per_node = 2;
  std::chrono::milliseconds admission_window{60000};
  std::chrono::milliseconds engine_timeout{10000};
  double overcommit = 4.0;
};

class Reconciler {
 public:
  // `inflight` is the CSI service's guard set: a replacement holds the
  // volume's key like any CSI call, so the two never race on one volume.
  Reconciler(Records* records, NodeRegistry* nodes, EngineDirectory* engines,
             csi::InFlight* inflight, ReconcilerOptions options);
  ~Reconciler();  // Stop()
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  void Start();
  void Stop();
  // One pass now; the number of replicas replaced.
  int RunOnce();

 private:
  // Replaces `index` of the volume's replicas; OK when done or skipped.
  Status Replace(Versioned<rec::VolumeRecord> v, int index, const std::vector<NodeView>& nodes);
  void DeleteRetired(Versioned<rec::VolumeRecord> v, const std::vector<NodeView>& nodes);
  bool Admit(const std::string& node_id);
  // The live target of the volume's attachment when it is that
  // attachment's own and serves (CheckAttachmentTarget); nullopt otherwise.
  std::optional<epb::Target> AttachmentTarget(const rec::VolumeRecord& record,
                                              const std::vector<NodeView>& nodes);
  // The index of a replica of a published volume whose live `target`
  // (nullptr: none) has reported it FAULTED, on a node that is up, for
  // replace_after (a failing disk: the target's reconnects never bring it
  // back); -1 when none.
  int FaultedOnLiveNode(const rec::VolumeRecord& record, const std::vector<NodeView>& nodes,
                        const epb::Target* target);
  // Whether a replica of the record, on a node that is up, has been missing
  // from the live `target` for replace_after (MissingFromTarget: a shrink
  // abandoned after the target dropped its victims). The wait leaves a
  // crashed shrink's retry time to resume as it began.
  bool MissingForLong(const rec::VolumeRecord& record, const epb::Target* target);
  // Adds the missing replicas back to the live target (RestoreLiveTarget),
  // under the volume's in-flight guard and from the record as it is then.
  Status Restore(const Versioned<rec::VolumeRecord>& v);
  // Swaps `old` for `fresh` in the volume's record with a compare-and-swap,
  // re-read and re-applied when the record changed meanwhile (the membership
  // authority writes the in-sync set at any time): the target already has
  // the new replica, so the record must follow.
  Status SwapInRecord(const std::string& volume_id, const rec::ReplicaRecord& old,
                      const rec::ReplicaRecord& fresh);

  Records* const records_;
  NodeRegistry* const nodes_;
  EngineDirectory* const engines_;
  csi::InFlight* const inflight_;
  const ReconcilerOptions options_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  // Since when a target has reported a replica FAULTED, by "volume/address"
  // (only the reconciler thread touches it).
  std::map<std::string, std::chrono::steady_clock::time_point> faulted_since_;
  // Since when a replica of the record has been missing from the live
  // target, by "volume/replica id" (the reconciler thread only).
  std::map<std::string, std::chrono::steady_clock::time_point> missing_since_;
  // Replacement start times per destination node (admission).
  std::map<std::string, std::vector<std::chrono::steady_clock::time_point>> admitted_;

  std::mutex mu_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace tandem::controller

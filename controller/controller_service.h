#pragma once
// ControllerService: the CSI Controller service of tandem-controller.
//
// Every handler has the same shape (docs/controller.md): validate the
// request (INVALID_ARGUMENT naming the field), take the per-volume in-flight
// guard (a concurrent call for the same volume id or name is ABORTED), check
// that this instance leads (UNAVAILABLE otherwise: the sidecars retry, and
// with leader election they talk to the leader), look the volume up
// idempotently, act, answer. State lives only in the metadata store (every
// change is a compare-and-swap Txn that requires leadership), so a
// controller killed between or during calls loses nothing: a retried call
// finds the record and finishes the job.
//
// The handlers are split by verb over controller_service*.cc:
//   controller_service.cc          capabilities, validate, list, get, capacity
//   controller_service_create.cc   CreateVolume, DeleteVolume
//   controller_service_publish.cc  ControllerPublish/UnpublishVolume (epochs, fencing)
//   controller_service_modify.cc   ControllerModifyVolume, ControllerExpandVolume
//   controller_service_replicas.cc ModifyVolume's replica count (grow)
//   controller_service_shrink.cc   ... lowered (online shrink)
//
// Thread-safety: gRPC runs handlers concurrently; all state is in the store,
// the registry and the engine directory, which are thread-safe.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "controller/engine_directory.h"
#include "controller/node_registry.h"
#include "controller/placement.h"
#include "controller/records.h"
#include "controller/shrink_plan.h"
#include "controller/volume_params.h"
#include "csi/csi.grpc.pb.h"
#include "csi/inflight.h"

namespace tandem::controller {

namespace csipb = ::csi::v1;

struct ControllerOptions {
  // Timeout of each engine call (CreateReplica, DeleteReplica, FenceReplica).
  std::chrono::milliseconds engine_timeout{10000};
  // Thin over-commit limit for placement (placement.h).
  double overcommit = 4.0;
};

class ControllerService final : public csipb::Controller::Service {
 public:
  // `inflight`: the per-volume guard set, shared with the reconciler.
  ControllerService(Records* records, NodeRegistry* nodes, EngineDirectory* engines,
                    csi::InFlight* inflight, ControllerOptions options);

  grpc::Status CreateVolume(grpc::ServerContext* ctx, const csipb::CreateVolumeRequest* req,
                            csipb::CreateVolumeResponse* resp) override;
  grpc::Status DeleteVolume(grpc::ServerContext* ctx, const csipb::DeleteVolumeRequest* req,
                            csipb::DeleteVolumeResponse* resp) override;
  grpc::Status ControllerPublishVolume(grpc::ServerContext* ctx,
                                       const csipb::ControllerPublishVolumeRequest* req,
                                       csipb::ControllerPublishVolumeResponse* resp) override;
  grpc::Status ControllerUnpublishVolume(grpc::ServerContext* ctx,
                                         const csipb::ControllerUnpublishVolumeRequest* req,
                                         csipb::ControllerUnpublishVolumeResponse* resp) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext* ctx,
                                          const csipb::ValidateVolumeCapabilitiesRequest* req,
                                          csipb::ValidateVolumeCapabilitiesResponse* resp) override;
  grpc::Status ListVolumes(grpc::ServerContext* ctx, const csipb::ListVolumesRequest* req,
                           csipb::ListVolumesResponse* resp) override;
  grpc::Status ControllerGetVolume(grpc::ServerContext* ctx,
                                   const csipb::ControllerGetVolumeRequest* req,
                                   csipb::ControllerGetVolumeResponse* resp) override;
  grpc::Status GetCapacity(grpc::ServerContext* ctx, const csipb::GetCapacityRequest* req,
                           csipb::GetCapacityResponse* resp) override;
  grpc::Status ControllerExpandVolume(grpc::ServerContext* ctx,
                                      const csipb::ControllerExpandVolumeRequest* req,
                                      csipb::ControllerExpandVolumeResponse* resp) override;
  grpc::Status ControllerModifyVolume(grpc::ServerContext* ctx,
                                      const csipb::ControllerModifyVolumeRequest* req,
                                      csipb::ControllerModifyVolumeResponse* resp) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext* ctx,
                                         const csipb::ControllerGetCapabilitiesRequest* req,
                                         csipb::ControllerGetCapabilitiesResponse* resp) override;

 private:
  // The bodies, in our Status world (the overrides wrap them).
  Status DoCreateVolume(const csipb::CreateVolumeRequest& req, csipb::CreateVolumeResponse* resp);
  Status DoDeleteVolume(const csipb::DeleteVolumeRequest& req);
  Status DoPublish(const csipb::ControllerPublishVolumeRequest& req,
                   csipb::ControllerPublishVolumeResponse* resp);
  Status DoUnpublish(const csipb::ControllerUnpublishVolumeRequest& req);
  Status DoValidate(const csipb::ValidateVolumeCapabilitiesRequest& req,
                    csipb::ValidateVolumeCapabilitiesResponse* resp);
  Status DoListVolumes(const csipb::ListVolumesRequest& req, csipb::ListVolumesResponse* resp);
  Status DoGetVolume(const csipb::ControllerGetVolumeRequest& req,
                     csipb::ControllerGetVolumeResponse* resp);
  Status DoGetCapacity(const csipb::GetCapacityRequest& req, csipb::GetCapacityResponse* resp);
  Status DoModifyVolume(const csipb::ControllerModifyVolumeRequest& req);
  Status DoExpandVolume(const csipb::ControllerExpandVolumeRequest& req,
                        csipb::ControllerExpandVolumeResponse* resp);

  // UNAVAILABLE unless this instance leads.
  Status CheckLeader() const;
  // Creates every replica of a CREATING volume on its engine (in parallel)
  // and marks it READY. On a failure the replicas made are deleted again and
  // the record removed, so a retry places afresh.
  Status FinishCreate(Versioned<rec::VolumeRecord> v);
  // Deletes every replica on its engine (in parallel); OK when all are gone.
  Status DeleteReplicas(const rec::VolumeRecord& record);
  // ModifyVolume `replicas` (controller_service_replicas.cc): the record and,
  // when published, the live target follow `wanted`, higher (grow) or lower
  // (controller_service_shrink.cc).
  Status ChangeReplicaCount(Versioned<rec::VolumeRecord>* v, uint32_t wanted);
  Status GrowReplicas(Versioned<rec::VolumeRecord>* v, uint32_t count);
  Status RecordAddedReplicas(Versioned<rec::VolumeRecord>* v, const rec::VolumeRecord& grown);
  Status ShrinkReplicas(Versioned<rec::VolumeRecord>* v, uint32_t wanted);
  Result<std::vector<ReplicaFacts>> LiveFacts(const rec::VolumeRecord& record,
                                              std::map<std::string, std::string>* addresses);
  Result<std::vector<ReplicaFacts>> StoredFacts(const rec::VolumeRecord& record);
  Status RecordRemovedReplicas(Versioned<rec::VolumeRecord>* v,
                               const std::vector<std::string>& victims);
  void DeleteRemovedReplicas(Versioned<rec::VolumeRecord>* v,
                             const std::vector<std::string>& victims);
  // A new publish of a volume whose last in-sync call was a shrink that no
  // in-sync replica holds: back to the record before it, when provably safe
  // (controller_service_settle.cc).
  Status SettleUnsettledShrink(Versioned<rec::VolumeRecord>* v);
  // Whether the record's last in-sync call is a shrink not known to have
  // reached its survivors (previous_in_sync kept for the fallback).
  static bool UnsettledShrink(const rec::VolumeRecord& record);
  // OK once an in-sync replica of `record` holds its recorded shrink (or it
  // is none): settled, the fallback is never needed again. Polls for a few
  // seconds, then UNAVAILABLE (retry).
  Status WaitForShrinkToSettle(const rec::VolumeRecord& record);
  Status FallBackFromUnsettledShrink(Versioned<rec::VolumeRecord>* v);
  struct Held {
    std::string replica_id;
    Status status;
    epb::Replica replica;
  };
  std::vector<Held> FenceAndReadInSync(const rec::VolumeRecord& record, uint64_t epoch);
  // Raises every replica's epoch to `epoch`; OK when the old target can no
  // longer acknowledge a write (see the .cc).
  Status Fence(const rec::VolumeRecord& record, uint64_t epoch);
  // Candidates for placement: the registry's nodes with what the store says
  // is placed on each.
  Result<std::vector<NodeCandidate>> Candidates();
  // The CSI Volume of a record.
  void FillVolume(const rec::VolumeRecord& record, csipb::Volume* volume) const;
  std::string EngineAddress(const std::string& node_id) const;

  Records* const records_;
  NodeRegistry* const nodes_;
  EngineDirectory* const engines_;
  const ControllerOptions options_;
  csi::InFlight& inflight_;
};

}  // namespace tandem::controller

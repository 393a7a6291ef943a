#include "node-plugin/node_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <map>

#include "common/grpc/handler_guard.h"
#include "common/logging.h"
#include "csi/validation.h"
#include "node-plugin/filesystem.h"
#include "node-plugin/loop_device.h"

namespace tandem::node {

using ::csi::v1::VolumeCapability;

namespace {

constexpr const char* kDefaultFsType = "ext4";

// Shape and support of a capability, as csi/validation.h defines them.
Status CheckCapability(const VolumeCapability& cap, const char* field) {
  TANDEM_RETURN_IF_ERROR(csi::CheckCapabilityShape(field, cap));
  if (std::string why = csi::UnsupportedCapabilityReason(field, cap); !why.empty()) {
    return Status::InvalidArgument(why);
  }
  return Status::Ok();
}

bool IsReadOnlyMode(const VolumeCapability& cap) {
  return csi::IsReadOnlyMode(cap.access_mode().mode());
}

Status RemovePath(const std::string& path) {
  if (rmdir(path.c_str()) == 0 || errno == ENOENT) return Status::Ok();
  if (errno == ENOTDIR && (unlink(path.c_str()) == 0 || errno == ENOENT)) return Status::Ok();
  return PosixError("remove " + path, errno);
}

grpc::Status Answer(const Status& st) { return rpc::ToGrpcStatus(st); }

}  // namespace

NodeService::NodeService(NodeServiceOptions options, VolumeHost* host, NodeState* state,
                         Attachments* attachments)
    : options_(std::move(options)), host_(host), state_(state), attachments_(attachments) {}

Status NodeService::Stage(const ::csi::v1::NodeStageVolumeRequest& req) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("staging_target_path", req.staging_target_path()));
  TANDEM_RETURN_IF_ERROR(csi::RequirePresent("volume_capability", req.has_volume_capability()));
  TANDEM_RETURN_IF_ERROR(CheckCapability(req.volume_capability(), "volume_capability"));
  TANDEM_ASSIGN_OR_RETURN(csi::PublishContext info,
                          csi::DecodePublishContext(req.publish_context()));

  const VolumeCapability& cap = req.volume_capability();
  const bool block = cap.has_block();
  const std::string fs_type =
      block ? "" : (cap.mount().fs_type().empty() ? kDefaultFsType : cap.mount().fs_type());

  TANDEM_ASSIGN_OR_RETURN(auto existing, state_->Get(req.volume_id()));
  StagedVolume staged;
  if (existing) {
    staged = *existing;
    if (staged.staging_path != req.staging_target_path() || staged.block != block ||
        (!block && staged.fs_type != fs_type)) {
      return Status::AlreadyExists(
          "volume " + req.volume_id() + " is already staged at " + staged.staging_path +
          (staged.block ? " as a block device" : " with " + staged.fs_type) + "; unstage it first");
    }
    if (info.epoch < staged.epoch) {
      return Status::FailedPrecondition(
          "volume " + req.volume_id() + " is staged at epoch " + std::to_string(staged.epoch) +
          ", newer than this publish's " + std::to_string(info.epoch) +
          ": the publish was superseded");
    }
  }
  staged.volume_id = req.volume_id();
  staged.staging_path = req.staging_target_path();
  staged.block = block;
  staged.fs_type = fs_type;
  staged.read_only = IsReadOnlyMode(cap);
  // A stage at another epoch has not confirmed any target yet: the export
  // path of the old epoch's must not make the next stage after a crash
  // trust a target this stage built but never checked (the loop device
  // stays recorded, for Unstage).
  if (existing && existing->epoch != info.epoch) staged.export_path.clear();
  staged.epoch = info.epoch;
  // Record the intent before touching anything, so an Unstage after a crash
  // half-way through finds what to undo.
  TANDEM_RETURN_IF_ERROR(state_->Put(staged));

  // A previous stage of this epoch got past building (and checking) the
  // target: its export path is recorded only after that.
  const bool confirmed =
      existing && existing->epoch == info.epoch && !existing->export_path.empty();
  TANDEM_ASSIGN_OR_RETURN(HostedVolume hosted, AttachCurrent(req.volume_id(), info, confirmed));
  staged.export_path = hosted.export_path;
  TANDEM_RETURN_IF_ERROR(state_->Put(staged));

  LoopOptions loop;
  loop.read_only = staged.read_only;
  TANDEM_ASSIGN_OR_RETURN(staged.device, AttachLoop(hosted.export_path, loop));
  TANDEM_RETURN_IF_ERROR(state_->Put(staged));

  if (block) {
    // Nothing is mounted for a Block volume: Publish binds the device node.
    std::error_code ec;
    std::filesystem::create_directories(staged.staging_path, ec);
    if (ec) return Status::Internal("create " + staged.staging_path + ": " + ec.message());
    return Status::Ok();
  }
  if (!staged.read_only) {
    TANDEM_ASSIGN_OR_RETURN(std::string on_disk, FormatIfEmpty(staged.device, fs_type));
    (void)on_disk;
  }
  std::vector<std::string> options(cap.mount().mount_flags().begin(),
                                   cap.mount().mount_flags().end());
  if (staged.read_only) options.push_back("ro");
  // xfs refuses a second mount of a filesystem with the same UUID (a clone):
  // nouuid is harmless otherwise.
  if (fs_type == "xfs") options.push_back("nouuid");
  return Mount(staged.device, staged.staging_path, fs_type, options);
}

Status NodeService::Unstage(const std::string& volume_id, const std::string& staging_path) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", volume_id));
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("staging_target_path", staging_path));
  TANDEM_ASSIGN_OR_RETURN(auto staged, state_->Get(volume_id));
  // Unmount first: it writes the filesystem's dirty state back through the
  // loop device to the engine, which flushes it to every replica when the
  // target is destroyed.
  TANDEM_RETURN_IF_ERROR(Unmount(staging_path));
  std::string device = staged ? staged->device : "";
  if (device.empty() && staged && !staged->export_path.empty()) {
    TANDEM_ASSIGN_OR_RETURN(auto found, FindLoopByBackingFile(staged->export_path));
    if (found) device = *found;
  }
  if (!device.empty()) TANDEM_RETURN_IF_ERROR(DetachLoop(device));
  TANDEM_RETURN_IF_ERROR(host_->Detach(volume_id));
  TANDEM_RETURN_IF_ERROR(state_->Remove(volume_id));
  return Status::Ok();
}

Status NodeService::Publish(const ::csi::v1::NodePublishVolumeRequest& req) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("target_path", req.target_path()));
  TANDEM_RETURN_IF_ERROR(csi::RequirePresent("volume_capability", req.has_volume_capability()));
  TANDEM_RETURN_IF_ERROR(CheckCapability(req.volume_capability(), "volume_capability"));
  if (req.staging_target_path().empty()) {
    return Status::FailedPrecondition(
        "staging_target_path is empty: tandem-node advertises STAGE_UNSTAGE_VOLUME, "
        "so NodeStageVolume must run first");
  }
  TANDEM_ASSIGN_OR_RETURN(auto staged, state_->Get(req.volume_id()));
  if (!staged || staged->device.empty() || staged->staging_path != req.staging_target_path()) {
    return Status::FailedPrecondition("volume " + req.volume_id() + " is not staged at " +
                                      req.staging_target_path() + "; call NodeStageVolume first");
  }
  if (staged->block != req.volume_capability().has_block()) {
    return Status::AlreadyExists("volume " + req.volume_id() + " is staged as " +
                                 (staged->block ? "a block device" : "a filesystem") +
                                 ", incompatible with the requested capability");
  }
  const bool read_only = req.readonly() || staged->read_only;
  if (staged->block) return BindMount(staged->device, req.target_path(), read_only);
  TANDEM_ASSIGN_OR_RETURN(std::string source, MountSourceAt(staged->staging_path));
  if (source.empty()) {
    return Status::FailedPrecondition("volume " + req.volume_id() +
                                      ": nothing is mounted at its staging path " +
                                      staged->staging_path + "; stage it again");
  }
  return BindMount(staged->staging_path, req.target_path(), read_only);
}

Status NodeService::Unpublish(const std::string& volume_id, const std::string& target_path) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", volume_id));
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("target_path", target_path));
  TANDEM_RETURN_IF_ERROR(Unmount(target_path));
  return RemovePath(target_path);  // CSI: the SP removes the target path
}

Status NodeService::Stats(const ::csi::v1::NodeGetVolumeStatsRequest& req,
                          ::csi::v1::NodeGetVolumeStatsResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_path", req.volume_path()));
  TANDEM_ASSIGN_OR_RETURN(auto staged, state_->Get(req.volume_id()));
  if (!staged) return Status::NotFound("volume " + req.volume_id() + " is not staged on this node");
  struct stat st;
  if (stat(req.volume_path().c_str(), &st) != 0) {
    return Status::NotFound("volume_path " + req.volume_path() + " does not exist");
  }
  if (staged->block) {
    TANDEM_ASSIGN_OR_RETURN(uint64_t size, BlockDeviceSize(staged->device));
    auto* u = resp->add_usage();
    u->set_unit(::csi::v1::VolumeUsage::BYTES);
    u->set_total(static_cast<int64_t>(size));
  } else {
    TANDEM_ASSIGN_OR_RETURN(FilesystemStats fs, StatFilesystem(req.volume_path()));
    auto* b = resp->add_usage();
    b->set_unit(::csi::v1::VolumeUsage::BYTES);
    b->set_total(static_cast<int64_t>(fs.total_bytes));
    b->set_available(static_cast<int64_t>(fs.available_bytes));
    b->set_used(static_cast<int64_t>(fs.used_bytes));
    auto* i = resp->add_usage();
    i->set_unit(::csi::v1::VolumeUsage::INODES);
    i->set_total(static_cast<int64_t>(fs.total_inodes));
    i->set_available(static_cast<int64_t>(fs.free_inodes));
    i->set_used(static_cast<int64_t>(fs.used_inodes));
  }
  auto health = host_->Health(req.volume_id());
  auto* cond = resp->mutable_volume_condition();
  if (!health.ok()) {
    cond->set_abnormal(true);
    cond->set_message("the engine does not answer for this volume: " + health.status().ToString());
  } else {
    cond->set_abnormal(health->abnormal);
    cond->set_message(health->message);
  }
  return Status::Ok();
}

Status NodeService::Expand(const ::csi::v1::NodeExpandVolumeRequest& req,
                           ::csi::v1::NodeExpandVolumeResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_path", req.volume_path()));
  TANDEM_ASSIGN_OR_RETURN(auto staged, state_->Get(req.volume_id()));
  if (!staged || staged->device.empty()) {
    return Status::NotFound("volume " + req.volume_id() + " is not staged on this node");
  }
  uint64_t want =
      static_cast<uint64_t>(std::max<int64_t>(0, req.capacity_range().required_bytes()));
  if (want > 0) TANDEM_RETURN_IF_ERROR(host_->Resize(req.volume_id(), want).status());
  // The loop driver takes the size from the kernel's cached attributes of the
  // FUSE file: a stat() refreshes them first (docs/fuse_export.md).
  struct stat st;
  if (!staged->export_path.empty()) (void)stat(staged->export_path.c_str(), &st);
  TANDEM_RETURN_IF_ERROR(RefreshLoopCapacity(staged->device));
  if (!staged->block) {
    // kubelet passes the staging path or a publish path: both show the same filesystem.
    TANDEM_RETURN_IF_ERROR(GrowFilesystem(staged->device, req.volume_path(), staged->fs_type));
  }
  TANDEM_ASSIGN_OR_RETURN(uint64_t size, BlockDeviceSize(staged->device));
  resp->set_capacity_bytes(static_cast<int64_t>(size));
  return Status::Ok();
}

// A call that holds its volume id: a second call for the same volume while
// this one runs answers ABORTED instead of racing it (a slow mkfs).
#define TANDEM_NODE_CALL(name, volume_id, body)                         \
  rpc::ServeCall(name, no_auth_, *ctx, [&]() -> grpc::Status {          \
    auto guard = inflight_.TryAcquire("vol:" + std::string(volume_id)); \
    if (!guard.ok()) return Answer(guard.status());                     \
    return Answer(body);                                                \
  })

grpc::Status NodeService::NodeStageVolume(grpc::ServerContext* ctx,
                                          const ::csi::v1::NodeStageVolumeRequest* req,
                                          ::csi::v1::NodeStageVolumeResponse*) {
  return TANDEM_NODE_CALL("NodeStageVolume", req->volume_id(), Stage(*req));
}

grpc::Status NodeService::NodeUnstageVolume(grpc::ServerContext* ctx,
                                            const ::csi::v1::NodeUnstageVolumeRequest* req,
                                            ::csi::v1::NodeUnstageVolumeResponse*) {
  return TANDEM_NODE_CALL("NodeUnstageVolume", req->volume_id(),
                          Unstage(req->volume_id(), req->staging_target_path()));
}

grpc::Status NodeService::NodePublishVolume(grpc::ServerContext* ctx,
                                            const ::csi::v1::NodePublishVolumeRequest* req,
                                            ::csi::v1::NodePublishVolumeResponse*) {
  return TANDEM_NODE_CALL("NodePublishVolume", req->volume_id(), Publish(*req));
}

grpc::Status NodeService::NodeUnpublishVolume(grpc::ServerContext* ctx,
                                              const ::csi::v1::NodeUnpublishVolumeRequest* req,
                                              ::csi::v1::NodeUnpublishVolumeResponse*) {
  return TANDEM_NODE_CALL("NodeUnpublishVolume", req->volume_id(),
                          Unpublish(req->volume_id(), req->target_path()));
}

grpc::Status NodeService::NodeGetVolumeStats(grpc::ServerContext* ctx,
                                             const ::csi::v1::NodeGetVolumeStatsRequest* req,
                                             ::csi::v1::NodeGetVolumeStatsResponse* resp) {
  // Stats never take the volume's lock: kubelet polls them while a slow
  // stage of another call may be running, and they only read.
  return rpc::ServeCall("NodeGetVolumeStats", no_auth_, *ctx,
                        [&]() -> grpc::Status { return Answer(Stats(*req, resp)); });
}

grpc::Status NodeService::NodeExpandVolume(grpc::ServerContext* ctx,
                                           const ::csi::v1::NodeExpandVolumeRequest* req,
                                           ::csi::v1::NodeExpandVolumeResponse* resp) {
  return TANDEM_NODE_CALL("NodeExpandVolume", req->volume_id(), Expand(*req, resp));
}

grpc::Status NodeService::NodeGetCapabilities(grpc::ServerContext* ctx,
                                              const ::csi::v1::NodeGetCapabilitiesRequest*,
                                              ::csi::v1::NodeGetCapabilitiesResponse* resp) {
  return rpc::ServeCall("NodeGetCapabilities", no_auth_, *ctx, [&]() -> grpc::Status {
    using Rpc = ::csi::v1::NodeServiceCapability::RPC;
    for (auto type : {Rpc::STAGE_UNSTAGE_VOLUME, Rpc::GET_VOLUME_STATS, Rpc::EXPAND_VOLUME,
                      Rpc::VOLUME_CONDITION, Rpc::SINGLE_NODE_MULTI_WRITER}) {
      resp->add_capabilities()->mutable_rpc()->set_type(type);
    }
    return grpc::Status::OK;
  });
}

grpc::Status NodeService::NodeGetInfo(grpc::ServerContext* ctx,
                                      const ::csi::v1::NodeGetInfoRequest*,
                                      ::csi::v1::NodeGetInfoResponse* resp) {
  return rpc::ServeCall("NodeGetInfo", no_auth_, *ctx, [&]() -> grpc::Status {
    resp->set_node_id(options_.node_id);
    resp->set_max_volumes_per_node(options_.max_volumes_per_node);
    auto* segments = resp->mutable_accessible_topology()->mutable_segments();
    (*segments)[kTopologyNodeKey] = options_.node_id;
    if (!options_.zone.empty()) (*segments)[kTopologyZoneKey] = options_.zone;
    return grpc::Status::OK;
  });
}

}  // namespace tandem::node

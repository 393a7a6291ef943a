#include "node-plugin/node_service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "node-plugin/loop_device.h"
#include "node-plugin/test_dir.h"

namespace tandem::node {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// The engine stand-in for these tests: a volume is a sparse file that outlives
// Detach (as replicas outlive a target). The real VolumeHost, over the
// engine's API, is exercised by the end-to-end test.
class FileVolumeHost : public VolumeHost {
 public:
  explicit FileVolumeHost(std::string dir) : dir_(std::move(dir)) {}
  Result<HostedVolume> Attach(const std::string& id, const csi::PublishContext& info) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++attach_calls_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !hold_attach_; });
    }
    auto it = epochs_.find(id);
    if (it != epochs_.end() && it->second > info.epoch) {
      return Status::FailedPrecondition("superseded");
    }
    epochs_[id] = info.epoch;
    last_info_[id] = info;
    std::string path = dir_ + "/" + id + ".img";
    if (access(path.c_str(), F_OK) != 0) {
      int fd = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0 ||
          ftruncate(fd, static_cast<off_t>(info.size_bytes ? info.size_bytes : 128 * kMiB)) != 0) {
        return Status::Internal("cannot create " + path);
      }
      close(fd);
    }
    attached_[id] = path;
    return HostedVolume{path, info.size_bytes, info.epoch};
  }
  Status Detach(const std::string& id) override {
    detach_calls_ += attached_.count(id);
    attached_.erase(id);
    return Status::Ok();
  }
  Result<HostedVolume> Describe(const std::string& id) override {
    auto it = attached_.find(id);
    if (it == attached_.end()) return Status::NotFound(id);
    return HostedVolume{it->second, 0, epochs_[id]};
  }
  Result<VolumeHealth> Health(const std::string& id) override {
    if (!attached_.count(id)) return Status::NotFound(id);
    return VolumeHealth{degraded_, degraded_ ? "replica 2 of 3 FAULTED" : ""};
  }
  Result<uint64_t> Resize(const std::string& id, uint64_t size) override {
    if (truncate(attached_[id].c_str(), static_cast<off_t>(size)) != 0)
      return Status::Internal("truncate");
    return size;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_attach_ = false;
  int attach_calls_ = 0;
  bool degraded_ = false;
  int detach_calls_ = 0;
  std::map<std::string, std::string> attached_;
  std::map<std::string, csi::PublishContext> last_info_;  // what each target was built from

 private:
  std::string dir_;
  std::map<std::string, uint64_t> epochs_;
};

// The controller's GetAttachment stand-in: `answers` first, then `answer`.
class FakeAttachments : public Attachments {
 public:
  Result<csi::PublishContext> Current(const std::string&) override {
    ++calls;
    if (!answers.empty()) {
      Result<csi::PublishContext> a = answers.front();
      answers.pop_front();
      return a;
    }
    return answer;
  }
  std::string where() const override { return "tandem-controller at unix:///fake/csi.sock"; }
  std::deque<Result<csi::PublishContext>> answers;
  Result<csi::PublishContext> answer = Status::Unavailable("connection refused");
  int calls = 0;
};

::csi::v1::VolumeCapability MountCap(
    const std::string& fs = "ext4",
    ::csi::v1::VolumeCapability::AccessMode::Mode mode =
        ::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
  ::csi::v1::VolumeCapability cap;
  cap.mutable_mount()->set_fs_type(fs);
  cap.mutable_access_mode()->set_mode(mode);
  return cap;
}

::csi::v1::VolumeCapability BlockCap() {
  ::csi::v1::VolumeCapability cap;
  cap.mutable_block();
  cap.mutable_access_mode()->set_mode(::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return cap;
}

class NodeServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CanAttachLoops()) GTEST_SKIP() << "needs root and /dev/loop-control";
    auto st = NodeState::Open(dir_ / "state");
    ASSERT_TRUE(st.ok());
    state_ = std::make_unique<NodeState>(std::move(*st));
    host_ = std::make_unique<FileVolumeHost>(dir_.path());
    service_ = std::make_unique<NodeService>(
        NodeServiceOptions{.node_id = "node-a", .zone = "zone-1"}, host_.get(), state_.get());
  }
  void TearDown() override {
    if (!service_) return;
    // Undo whatever a failed test left: mounts first, then loops.
    for (const auto& p : published_) (void)Unpublish("any", p);
    for (const auto& [id, staging] : staged_) (void)Unstage(id, staging);
  }

  std::map<std::string, std::string> Context(uint64_t epoch) {
    csi::PublishContext info;
    info.epoch = epoch;
    info.replicas = {{"r1", "127.0.0.1:9701"}, {"r2", "127.0.0.1:9702"}};
    info.size_bytes = 128 * kMiB;
    info.volume_secret = "00112233445566778899aabbccddeeff";
    return csi::EncodePublishContext(info);
  }
  // What the controller answers now: replicas r1 and r3 (r2 was replaced).
  static csi::PublishContext Current(uint64_t epoch) {
    csi::PublishContext info;
    info.epoch = epoch;
    info.replicas = {{"r1", "127.0.0.1:9701"}, {"r3", "127.0.0.1:9703"}};
    info.size_bytes = 128 * kMiB;
    return info;
  }
  // The service asks `attachments_` at stage, as tandem-node --controller does.
  void UseController() {
    attachments_ = std::make_unique<FakeAttachments>();
    service_ = std::make_unique<NodeService>(NodeServiceOptions{.node_id = "node-a"}, host_.get(),
                                             state_.get(), attachments_.get());
  }
  grpc::Status Stage(const std::string& id, const std::string& staging,
                     const ::csi::v1::VolumeCapability& cap, uint64_t epoch = 1) {
    ::csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging);
    *req.mutable_volume_capability() = cap;
    for (const auto& [k, v] : Context(epoch)) (*req.mutable_publish_context())[k] = v;
    staged_[id] = staging;
    grpc::ServerContext ctx;
    ::csi::v1::NodeStageVolumeResponse resp;
    return service_->NodeStageVolume(&ctx, &req, &resp);
  }
  grpc::Status Unstage(const std::string& id, const std::string& staging) {
    ::csi::v1::NodeUnstageVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging);
    grpc::ServerContext ctx;
    ::csi::v1::NodeUnstageVolumeResponse resp;
    return service_->NodeUnstageVolume(&ctx, &req, &resp);
  }
  grpc::Status Publish(const std::string& id, const std::string& staging, const std::string& target,
                       const ::csi::v1::VolumeCapability& cap, bool readonly = false) {
    ::csi::v1::NodePublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_staging_target_path(staging);
    req.set_target_path(target);
    req.set_readonly(readonly);
    *req.mutable_volume_capability() = cap;
    published_.push_back(target);
    grpc::ServerContext ctx;
    ::csi::v1::NodePublishVolumeResponse resp;
    return service_->NodePublishVolume(&ctx, &req, &resp);
  }
  grpc::Status Unpublish(const std::string& id, const std::string& target) {
    ::csi::v1::NodeUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_target_path(target);
    grpc::ServerContext ctx;
    ::csi::v1::NodeUnpublishVolumeResponse resp;
    return service_->NodeUnpublishVolume(&ctx, &req, &resp);
  }
  grpc::Status Stats(const std::string& id, const std::string& path,
                     ::csi::v1::NodeGetVolumeStatsResponse* resp) {
    ::csi::v1::NodeGetVolumeStatsRequest req;
    req.set_volume_id(id);
    req.set_volume_path(path);
    grpc::ServerContext ctx;
    return service_->NodeGetVolumeStats(&ctx, &req, resp);
  }

  TestDir dir_;
  std::unique_ptr<NodeState> state_;
  std::unique_ptr<FileVolumeHost> host_;
  std::unique_ptr<FakeAttachments> attachments_;
  std::unique_ptr<NodeService> service_;
  std::map<std::string, std::string> staged_;
  std::vector<std::string> published_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(NodeServiceTest, FilesystemVolumeStagesPublishesAndKeepsItsDataAcrossUnstageAndRestage) {
  const std::string staging = dir_ / "globalmount", pod = dir_ / "pods/a/mount",
                    pod_ro = dir_ / "pods/b/mount";
  ASSERT_TRUE(Stage("vol-1", staging, MountCap()).ok());
  ASSERT_TRUE(Stage("vol-1", staging, MountCap()).ok()) << "NodeStage is idempotent";
  ASSERT_TRUE(Publish("vol-1", staging, pod, MountCap()).ok());
  ASSERT_TRUE(Publish("vol-1", staging, pod, MountCap()).ok()) << "NodePublish is idempotent";
  {
    std::ofstream out(pod + "/data.txt");
    out << "acknowledged\n";
  }
  sync();
  ASSERT_TRUE(Publish("vol-1", staging, pod_ro, MountCap(), /*readonly=*/true).ok());
  EXPECT_EQ(ReadAll(pod_ro + "/data.txt"), "acknowledged\n");
  int fd = open((pod_ro + "/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_LT(fd, 0) << "a readonly publish must refuse writes";
  if (fd >= 0) close(fd);

  ::csi::v1::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(Stats("vol-1", pod, &stats).ok());
  ASSERT_EQ(stats.usage_size(), 2);
  EXPECT_EQ(stats.usage(0).unit(), ::csi::v1::VolumeUsage::BYTES);
  EXPECT_GT(stats.usage(0).total(), static_cast<int64_t>(100 * kMiB));
  EXPECT_EQ(stats.usage(1).unit(), ::csi::v1::VolumeUsage::INODES);
  EXPECT_GT(stats.usage(1).used(), 0);
  EXPECT_FALSE(stats.volume_condition().abnormal());
  host_->degraded_ = true;
  ::csi::v1::NodeGetVolumeStatsResponse degraded;
  ASSERT_TRUE(Stats("vol-1", pod, &degraded).ok());
  EXPECT_TRUE(degraded.volume_condition().abnormal());
  EXPECT_NE(degraded.volume_condition().message().find("FAULTED"), std::string::npos);

  for (const auto& p : {pod, pod_ro}) {
    ASSERT_TRUE(Unpublish("vol-1", p).ok());
    ASSERT_TRUE(Unpublish("vol-1", p).ok()) << "NodeUnpublish is idempotent";
    EXPECT_NE(access(p.c_str(), F_OK), 0) << "the target path is removed";
  }
  ASSERT_TRUE(Unstage("vol-1", staging).ok());
  ASSERT_TRUE(Unstage("vol-1", staging).ok()) << "NodeUnstage is idempotent";
  auto loop = FindLoopByBackingFile(host_->attached_.count("vol-1") ? host_->attached_["vol-1"]
                                                                    : dir_ / "vol-1.img");
  ASSERT_TRUE(loop.ok());
  EXPECT_FALSE(loop->has_value()) << "unstage detaches the loop device";
  EXPECT_FALSE(host_->attached_.count("vol-1")) << "unstage destroys the target";

  // Stage again (a pod moved back): the filesystem is found, not reformatted.
  ASSERT_TRUE(Stage("vol-1", staging, MountCap(), 2).ok());
  EXPECT_EQ(ReadAll(staging + "/data.txt"), "acknowledged\n");
}

TEST_F(NodeServiceTest, BlockVolumePublishesTheDeviceNodeAndBytesReachTheVolume) {
  const std::string staging = dir_ / "blockstaging", pod = dir_ / "pods/c/dev";
  ASSERT_TRUE(Stage("vol-b", staging, BlockCap()).ok());
  ASSERT_TRUE(Publish("vol-b", staging, pod, BlockCap()).ok());
  struct stat st;
  ASSERT_EQ(stat(pod.c_str(), &st), 0);
  ASSERT_TRUE(S_ISBLK(st.st_mode));
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 8192), 0);
  memset(buf, 0x5a, 8192);
  int fd = open(pod.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, buf, 8192, 3 * kMiB), 8192);
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
  ASSERT_TRUE(Unpublish("vol-b", pod).ok());
  ASSERT_TRUE(Unstage("vol-b", staging).ok());
  std::vector<char> back(8192);
  int ffd = open((dir_ / "vol-b.img").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(ffd, 0);
  ASSERT_EQ(pread(ffd, back.data(), back.size(), 3 * kMiB), 8192);
  close(ffd);
  EXPECT_EQ(memcmp(back.data(), buf, 8192), 0);
  free(buf);
}

TEST_F(NodeServiceTest, BadRequestsGetTheCodeTheSpecNames) {
  const std::string staging = dir_ / "s";
  EXPECT_EQ(Stage("", staging, MountCap()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto missing_path = Stage("vol-x", "", MountCap());
  EXPECT_EQ(missing_path.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(missing_path.error_message().find("staging_target_path"), std::string::npos);
  EXPECT_EQ(Stage("vol-x", staging, MountCap("btrfs")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(
      Stage("vol-x", staging,
            MountCap("ext4", ::csi::v1::VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER))
          .error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stage("../etc", staging, MountCap()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    ::csi::v1::NodeStageVolumeRequest req;
    req.set_volume_id("vol-x");
    req.set_staging_target_path(staging);
    *req.mutable_volume_capability() = MountCap();
    grpc::ServerContext ctx;
    ::csi::v1::NodeStageVolumeResponse resp;
    auto st = service_->NodeStageVolume(&ctx, &req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("tandem.csi.io/epoch"), std::string::npos)
        << st.error_message();
  }
  EXPECT_EQ(Publish("vol-x", staging, dir_ / "p", MountCap()).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "publish before stage";
  EXPECT_EQ(Publish("vol-x", "", dir_ / "p", MountCap()).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ::csi::v1::NodeGetVolumeStatsResponse stats;
  EXPECT_EQ(Stats("vol-x", staging, &stats).error_code(), grpc::StatusCode::NOT_FOUND);

  ASSERT_TRUE(Stage("vol-y", staging, MountCap(), 5).ok());
  EXPECT_EQ(Stage("vol-y", dir_ / "elsewhere", MountCap(), 5).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Stage("vol-y", staging, MountCap(), 3).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "an older epoch than the staged one was superseded";
  EXPECT_EQ(Publish("vol-y", staging, dir_ / "blk", BlockCap()).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(NodeServiceTest, ASecondCallForTheSameVolumeIsAbortedWhileTheFirstRuns) {
  const std::string staging = dir_ / "slow";
  {
    std::lock_guard<std::mutex> lock(host_->mu_);
    host_->hold_attach_ = true;
  }
  grpc::Status first;
  std::thread t([&] { first = Stage("vol-s", staging, MountCap()); });
  {
    std::unique_lock<std::mutex> lock(host_->mu_);
    host_->cv_.wait(lock, [&] { return host_->attach_calls_ == 1; });
  }
  EXPECT_EQ(Stage("vol-s", staging, MountCap()).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(Unstage("vol-s", staging).error_code(), grpc::StatusCode::ABORTED);
  {
    std::lock_guard<std::mutex> lock(host_->mu_);
    host_->hold_attach_ = false;
    host_->cv_.notify_all();
  }
  t.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
}

TEST_F(NodeServiceTest, StageBuildsTheTargetFromTheControllersCurrentContextAtThePublishEpoch) {
  UseController();
  attachments_->answer = Current(4);
  ASSERT_TRUE(Stage("vol-c", dir_ / "c", BlockCap(), 4).ok());
  const csi::PublishContext& built = host_->last_info_["vol-c"];
  EXPECT_EQ(built.replicas, Current(4).replicas) << "the controller's replicas, not kubelet's";
  EXPECT_EQ(built.epoch, 4u);
  EXPECT_EQ(built.volume_secret, "00112233445566778899aabbccddeeff") << "kubelet's secret";
  EXPECT_EQ(attachments_->calls, 2) << "asked before and after building the target";
}

TEST_F(NodeServiceTest, StageRefusesWhatTheControllerRefusesAndAnotherEpoch) {
  UseController();
  attachments_->answer = Current(5);
  auto st = Stage("vol-e", dir_ / "e", BlockCap(), 4);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_NE(st.error_message().find("superseded"), std::string::npos) << st.error_message();
  attachments_->answer = Status::NotFound("volume vol-e does not exist");
  EXPECT_EQ(Stage("vol-e", dir_ / "e", BlockCap(), 4).error_code(), grpc::StatusCode::NOT_FOUND);
  attachments_->answer = Status::FailedPrecondition("volume vol-e is published to node node-b");
  EXPECT_EQ(Stage("vol-e", dir_ / "e", BlockCap(), 4).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(host_->attach_calls_, 0) << "no target built from an unconfirmed context";
}

TEST_F(NodeServiceTest, AnUnreachableControllerFailsANewTargetButKeepsALiveOne) {
  UseController();
  auto st = Stage("vol-u", dir_ / "u", BlockCap(), 2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(st.error_message().find("unix:///fake/csi.sock"), std::string::npos)
      << "names the controller: " << st.error_message();
  EXPECT_EQ(host_->attach_calls_, 0);
  // Staged while it answered; then tandem-node restarts and kubelet stages
  // again while the controller is down: the live target at the publish's
  // epoch is the one the controller changes in place, so it is kept.
  attachments_->answer = Current(2);
  ASSERT_TRUE(Stage("vol-u", dir_ / "u", BlockCap(), 2).ok());
  attachments_->answer = Status::Unavailable("connection refused");
  st = Stage("vol-u", dir_ / "u", BlockCap(), 2);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(host_->detach_calls_, 0);
}

TEST_F(NodeServiceTest, AReplicaChangeWhileTheTargetIsBuiltRebuildsIt) {
  UseController();
  csi::PublishContext before = Current(3);
  before.replicas = {{"r1", "127.0.0.1:9701"}, {"r2", "127.0.0.1:9702"}};
  // A change of the volume runs (ABORTED), then the record before it, then
  // (the change done meanwhile) the record after it.
  attachments_->answers = {Status::Aborted("operation pending for vol:vol-r"), before};
  attachments_->answer = Current(3);
  ASSERT_TRUE(Stage("vol-r", dir_ / "r", BlockCap(), 3).ok());
  EXPECT_EQ(host_->attach_calls_, 2);
  EXPECT_EQ(host_->detach_calls_, 1) << "the target built from the old record was destroyed";
  EXPECT_EQ(host_->last_info_["vol-r"].replicas, Current(3).replicas);
}

// tandem-node died after its engine built a target and before it checked it
// against the controller: the next stage does not trust that target.
TEST_F(NodeServiceTest, ATargetNoStageConfirmedIsBuiltAgainFromTheController) {
  UseController();
  csi::PublishContext stale = Current(6);
  stale.replicas = {{"r1", "127.0.0.1:9701"}, {"r2", "127.0.0.1:9702"}};
  ASSERT_TRUE(host_->Attach("vol-n", stale).ok());  // no state recorded for it
  auto st = Stage("vol-n", dir_ / "n", BlockCap(), 6);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << "unconfirmed, controller down";
  attachments_->answer = Current(6);
  st = Stage("vol-n", dir_ / "n", BlockCap(), 6);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(host_->detach_calls_, 1);
  EXPECT_EQ(host_->last_info_["vol-n"].replicas, Current(6).replicas);
}

// A stage at a new epoch (the old one never unstaged: force-detached)
// fails half-way with the controller down, after its engine built a target
// from a stale context: the next stage must not take the old epoch's export
// path as that target's confirmation.
TEST_F(NodeServiceTest, ANewEpochsUncheckedTargetIsNotConfirmedByTheOldEpochsStage) {
  UseController();
  attachments_->answer = Current(6);
  ASSERT_TRUE(Stage("vol-e", dir_ / "e", BlockCap(), 6).ok());
  attachments_->answer = Status::Unavailable("connection refused");
  EXPECT_EQ(Stage("vol-e", dir_ / "e", BlockCap(), 7).error_code(), grpc::StatusCode::UNAVAILABLE);
  csi::PublishContext stale = Current(7);
  stale.replicas = {{"r1", "127.0.0.1:9701"}, {"r2", "127.0.0.1:9702"}};
  ASSERT_TRUE(host_->Attach("vol-e", stale).ok());  // built, never checked
  auto st = Stage("vol-e", dir_ / "e", BlockCap(), 7);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << "unconfirmed, controller down";
  attachments_->answer = Current(7);
  st = Stage("vol-e", dir_ / "e", BlockCap(), 7);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(host_->last_info_["vol-e"].replicas, Current(7).replicas);
}

TEST_F(NodeServiceTest, NodeInfoAndCapabilities) {
  grpc::ServerContext ctx;
  ::csi::v1::NodeGetInfoRequest req;
  ::csi::v1::NodeGetInfoResponse info;
  ASSERT_TRUE(service_->NodeGetInfo(&ctx, &req, &info).ok());
  EXPECT_EQ(info.node_id(), "node-a");
  EXPECT_EQ(info.accessible_topology().segments().at(kTopologyZoneKey), "zone-1");
  ::csi::v1::NodeGetCapabilitiesRequest creq;
  ::csi::v1::NodeGetCapabilitiesResponse caps;
  ASSERT_TRUE(service_->NodeGetCapabilities(&ctx, &creq, &caps).ok());
  bool stage = false, stats = false, expand = false;
  for (const auto& c : caps.capabilities()) {
    stage |= c.rpc().type() == ::csi::v1::NodeServiceCapability::RPC::STAGE_UNSTAGE_VOLUME;
    stats |= c.rpc().type() == ::csi::v1::NodeServiceCapability::RPC::GET_VOLUME_STATS;
    expand |= c.rpc().type() == ::csi::v1::NodeServiceCapability::RPC::EXPAND_VOLUME;
  }
  EXPECT_TRUE(stage && stats && expand);
}

}  // namespace
}  // namespace tandem::node

#pragma once
// The fixture of the node end-to-end tests (node_e2e_test.cc,
// node_restage_e2e_test.cc): tandem-controller (SQLite), three tandem-engine
// processes and a tandem-node per simulated node (started with --controller),
// driven with the calls and the path layout kubelet and the external-attacher
// use. Real FUSE file exports, loop devices, mkfs and mounts (root only).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "common/grpc/client_channel.h"
#include "csi/csi.grpc.pb.h"
#include "node-plugin/loop_device.h"
#include "tests/harness/local_cluster.h"

namespace tandem::node::e2e {

namespace csi = ::csi::v1;
using controller::testing::LocalCluster;
using controller::testing::Process;
using controller::testing::WaitFor;

constexpr int64_t kMiB = 1 << 20;

inline std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 60) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

inline csi::VolumeCapability Cap(bool block, const std::string& fs = "ext4") {
  csi::VolumeCapability cap;
  if (block) {
    cap.mutable_block();
  } else {
    cap.mutable_mount()->set_fs_type(fs);
  }
  cap.mutable_access_mode()->set_mode(csi::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return cap;
}

// One simulated node's tandem-node, on <root>/<node>/csi.sock, and kubelet's
// directory layout under <root>/<node>/kubelet.
struct NodePlugin {
  std::string name, root;
  std::unique_ptr<Process> process = std::make_unique<Process>();
  std::unique_ptr<csi::Node::Stub> stub;
  std::string socket() const { return root + "/csi.sock"; }
  std::string staging(const std::string& volume) const {
    return root + "/kubelet/plugins/kubernetes.io/csi/tandem.csi.io/" + volume + "/globalmount";
  }
  std::string target(const std::string& pod, const std::string& volume) const {
    return root + "/kubelet/pods/" + pod + "/volumes/kubernetes.io~csi/" + volume + "/mount";
  }
};

class NodeEndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0 ||
        access("/dev/loop-control", F_OK) != 0) {
      return;
    }
    cluster_ = new LocalCluster();
    Status st = cluster_->StartEngines(3);
    if (st.ok()) st = cluster_->StartController();
    if (st.ok()) st = cluster_->RegisterEngines();
    for (int i = 0; st.ok() && i < 2; ++i) st = StartNode(&nodes_[i], cluster_->engines()[i]);
    setup_status_ = new Status(st);
  }
  static Status StartNode(NodePlugin* n, controller::testing::EngineNode& engine) {
    n->name = engine.name;
    n->root = cluster_->root() + "/node-" + engine.name;
    mkdir(n->root.c_str(), 0700);
    TANDEM_RETURN_IF_ERROR(
        n->process->Start({TANDEM_TEST_NODE_BIN, "--endpoint=unix://" + n->socket(),
                           "--node-id=" + engine.name, "--engine=" + engine.grpc_address(),
                           "--node-address=127.0.0.1", "--state-dir=" + n->root + "/state",
                           // Registers, and asks for each volume's current replica set at stage.
                           "--controller=" + cluster_->csi_endpoint()},
                          n->root + "/tandem-node.log"));
    // The channel is made once the socket exists: a first call that finds
    // no socket puts it in gRPC's reconnect backoff (seconds per node).
    WaitFor([&] { return access(n->socket().c_str(), F_OK) == 0; }, std::chrono::seconds(20));
    n->stub = csi::Node::NewStub(rpc::NewClientChannel("unix://" + n->socket()));
    bool up = WaitFor(
        [&] {
          csi::NodeGetInfoResponse info;
          return n->stub->NodeGetInfo(Ctx(2).get(), csi::NodeGetInfoRequest(), &info).ok();
        },
        std::chrono::seconds(20));
    return up ? Status::Ok() : Status::Unavailable("tandem-node " + n->name + " did not come up");
  }
  // Whatever a failed test left under the cluster's directory: mounts (pods'
  // binds, staging mounts, the engines' FUSE mounts; deepest first, lazily so
  // a dead FUSE server cannot block it) and loop devices over its files.
  static void CleanUpMountsAndLoops(const std::string& root) {
    std::vector<std::string> mounts;
    std::ifstream in("/proc/mounts");
    std::string src, dst, rest;
    while (in >> src >> dst && std::getline(in, rest)) {
      if (dst.rfind(root, 0) == 0) mounts.push_back(dst);
    }
    std::sort(mounts.rbegin(), mounts.rend());
    for (const auto& m : mounts) umount2(m.c_str(), MNT_DETACH);
    for (int i = 0; i < 64; ++i) {
      std::string dev = "/dev/loop" + std::to_string(i);
      auto backing = LoopBackingFile(dev);
      if (backing.ok() && backing->rfind(root, 0) == 0) (void)DetachLoop(dev);
    }
  }
  static void TearDownTestSuite() {
    if (cluster_) CleanUpMountsAndLoops(cluster_->root());
    for (auto& n : nodes_) n.process->Kill();
    delete cluster_;
    cluster_ = nullptr;
    delete setup_status_;
    setup_status_ = nullptr;
  }
  void SetUp() override {
    if (!cluster_) GTEST_SKIP() << "needs root, /dev/fuse and loop devices";
    ASSERT_TRUE(setup_status_->ok()) << setup_status_->ToString() << " in " << cluster_->root();
    ctl_ = cluster_->Controller();
  }

  std::string CreateVolume(const std::string& name, int64_t bytes, bool block,
                           const std::map<std::string, std::string>& params = {},
                           const std::string& fs = "ext4") {
    csi::CreateVolumeRequest req;
    req.set_name(name);
    req.mutable_capacity_range()->set_required_bytes(bytes);
    *req.add_volume_capabilities() = Cap(block, fs);
    (*req.mutable_parameters())["replicas"] = "3";
    for (const auto& [k, v] : params) (*req.mutable_parameters())[k] = v;
    csi::CreateVolumeResponse resp;
    grpc::Status st = ctl_->CreateVolume(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.volume().volume_id();
  }
  // ControllerPublish + NodeStage + NodePublish, as the attacher and kubelet do.
  void Attach(NodePlugin& node, const std::string& id, const std::string& pod, bool block,
              const std::string& fs = "ext4") {
    csi::ControllerPublishVolumeRequest pub;
    pub.set_volume_id(id);
    pub.set_node_id(node.name);
    *pub.mutable_volume_capability() = Cap(block, fs);
    csi::ControllerPublishVolumeResponse pub_resp;
    grpc::Status st = ctl_->ControllerPublishVolume(Ctx().get(), pub, &pub_resp);
    ASSERT_TRUE(st.ok()) << "ControllerPublish: " << st.error_message();
    last_publish_context_ = pub_resp.publish_context();
    StageAndPublish(node, id, pod, block, fs, pub_resp.publish_context());
  }
  // NodeStage + NodePublish with a given publish_context (kubelet's half).
  void StageAndPublish(NodePlugin& node, const std::string& id, const std::string& pod, bool block,
                       const std::string& fs,
                       const google::protobuf::Map<std::string, std::string>& context) {
    csi::NodeStageVolumeRequest stage;
    stage.set_volume_id(id);
    *stage.mutable_publish_context() = context;
    stage.set_staging_target_path(node.staging(id));
    *stage.mutable_volume_capability() = Cap(block, fs);
    csi::NodeStageVolumeResponse stage_resp;
    grpc::Status st = node.stub->NodeStageVolume(Ctx().get(), stage, &stage_resp);
    ASSERT_TRUE(st.ok()) << "NodeStage: " << st.error_message();

    csi::NodePublishVolumeRequest publish;
    publish.set_volume_id(id);
    *publish.mutable_publish_context() = context;
    publish.set_staging_target_path(node.staging(id));
    publish.set_target_path(node.target(pod, id));
    *publish.mutable_volume_capability() = Cap(block, fs);
    csi::NodePublishVolumeResponse publish_resp;
    st = node.stub->NodePublishVolume(Ctx().get(), publish, &publish_resp);
    ASSERT_TRUE(st.ok()) << "NodePublish: " << st.error_message();
  }
  void Detach(NodePlugin& node, const std::string& id, const std::string& pod) {
    UnpublishAndUnstage(node, id, pod);
    csi::ControllerUnpublishVolumeRequest cu;
    cu.set_volume_id(id);
    cu.set_node_id(node.name);
    csi::ControllerUnpublishVolumeResponse r3;
    grpc::Status st = ctl_->ControllerUnpublishVolume(Ctx().get(), cu, &r3);
    ASSERT_TRUE(st.ok()) << "ControllerUnpublish: " << st.error_message();
  }
  // NodeUnpublish + NodeUnstage (kubelet's half of a detach).
  void UnpublishAndUnstage(NodePlugin& node, const std::string& id, const std::string& pod) {
    csi::NodeUnpublishVolumeRequest unpublish;
    unpublish.set_volume_id(id);
    unpublish.set_target_path(node.target(pod, id));
    csi::NodeUnpublishVolumeResponse r1;
    grpc::Status st = node.stub->NodeUnpublishVolume(Ctx().get(), unpublish, &r1);
    ASSERT_TRUE(st.ok()) << "NodeUnpublish: " << st.error_message();
    csi::NodeUnstageVolumeRequest unstage;
    unstage.set_volume_id(id);
    unstage.set_staging_target_path(node.staging(id));
    csi::NodeUnstageVolumeResponse r2;
    st = node.stub->NodeUnstageVolume(Ctx().get(), unstage, &r2);
    ASSERT_TRUE(st.ok()) << "NodeUnstage: " << st.error_message();
  }

  // ControllerExpandVolume then NodeExpandVolume on `path`, as the resizer
  // and kubelet do for an online expansion.
  void ExpandOnline(NodePlugin& node, const std::string& id, const std::string& path,
                    int64_t bytes) {
    csi::ControllerExpandVolumeRequest creq;
    creq.set_volume_id(id);
    creq.mutable_capacity_range()->set_required_bytes(bytes);
    csi::ControllerExpandVolumeResponse cresp;
    grpc::Status st = ctl_->ControllerExpandVolume(Ctx().get(), creq, &cresp);
    ASSERT_TRUE(st.ok()) << "ControllerExpandVolume: " << st.error_message();
    EXPECT_GE(cresp.capacity_bytes(), bytes);
    // Block too: the node refreshes the loop device over the grown FUSE file.
    EXPECT_TRUE(cresp.node_expansion_required());
    csi::NodeExpandVolumeRequest nreq;
    nreq.set_volume_id(id);
    nreq.set_volume_path(path);
    nreq.set_staging_target_path(node.staging(id));
    nreq.mutable_capacity_range()->set_required_bytes(bytes);
    csi::NodeExpandVolumeResponse nresp;
    st = node.stub->NodeExpandVolume(Ctx(30).get(), nreq, &nresp);
    ASSERT_TRUE(st.ok()) << "NodeExpandVolume: " << st.error_message();
  }

  // NodeGetVolumeStats' volume_condition as kubelet reads it.
  static csi::VolumeCondition Condition(NodePlugin& node, const std::string& id,
                                        const std::string& path) {
    csi::NodeGetVolumeStatsRequest req;
    req.set_volume_id(id);
    req.set_volume_path(path);
    csi::NodeGetVolumeStatsResponse resp;
    grpc::Status st = node.stub->NodeGetVolumeStats(Ctx(5).get(), req, &resp);
    if (!st.ok()) {
      csi::VolumeCondition c;
      c.set_abnormal(true);
      c.set_message("NodeGetVolumeStats failed: " + st.error_message());
      return c;
    }
    return resp.volume_condition();
  }
  csi::VolumeCondition ControllerCondition(const std::string& id) {
    csi::ControllerGetVolumeRequest req;
    req.set_volume_id(id);
    csi::ControllerGetVolumeResponse resp;
    grpc::Status st = ctl_->ControllerGetVolume(Ctx(5).get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.status().volume_condition();
  }

  inline static LocalCluster* cluster_ = nullptr;
  inline static Status* setup_status_ = nullptr;
  inline static NodePlugin nodes_[2];
  std::unique_ptr<csi::Controller::Stub> ctl_;
  google::protobuf::Map<std::string, std::string> last_publish_context_;
};

// A tree of files with known contents.
inline std::map<std::string, std::string> MakeFiles(uint32_t seed) {
  std::mt19937 rng(seed);
  std::map<std::string, std::string> files;
  for (int i = 0; i < 24; ++i) {
    std::string name =
        (i % 3 ? "dir" + std::to_string(i % 4) + "/" : "") + "file-" + std::to_string(i);
    std::string data(1 + rng() % (600 * 1024), '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    files[name] = data;
  }
  return files;
}

inline void WriteFiles(const std::string& root, const std::map<std::string, std::string>& files) {
  for (const auto& [name, data] : files) {
    std::string path = root + "/" + name;
    if (size_t slash = name.rfind('/'); slash != std::string::npos) {
      mkdir((root + "/" + name.substr(0, slash)).c_str(), 0755);
    }
    int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
    ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
}

inline void ExpectFiles(const std::string& root, const std::map<std::string, std::string>& files) {
  for (const auto& [name, data] : files) {
    std::ifstream in(root + "/" + name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str().size(), data.size()) << name;
    EXPECT_TRUE(ss.str() == data) << name << " differs";
  }
}

// A writer thread, as an application in the pod: files of 128 KiB with
// contents from their index, each written and fsync'd, until stopped; after
// kFiles files it starts over (the same names, the same contents), so it
// writes for as long as a test needs in bounded space. Any failed call is an
// error the application saw.
class FileWriter {
 public:
  static constexpr int kFiles = 300;
  static constexpr size_t kFileBytes = 128 * 1024;
  explicit FileWriter(std::string dir) : dir_(std::move(dir)) {
    mkdir(dir_.c_str(), 0755);
    thread_ = std::thread([this] { Run(); });
  }
  ~FileWriter() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int written() const { return written_; }
  // Read it once WaitForMore returned false or after Stop().
  const std::string& error() const { return error_; }
  // Waits until `n` more files are written (bounded); false if not.
  bool WaitForMore(int n, std::chrono::seconds timeout) {
    int target = written_ + n;
    return WaitFor([&] { return written_ >= target || failed_; }, timeout) && !failed_;
  }
  static std::string Contents(int i) {
    std::mt19937 rng(1000 + i);
    std::string data(kFileBytes, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    return data;
  }
  // Every written file has its contents.
  void Verify() const {
    for (int i = 0; i < std::min<int>(written_, kFiles); ++i) {
      std::string path = dir_ + "/f-" + std::to_string(i);
      std::ifstream in(path, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      EXPECT_TRUE(ss.str() == Contents(i)) << path << " differs (" << ss.str().size() << " bytes)";
    }
  }

 private:
  void Run() {
    for (int i = 0; !stop_; ++i) {
      std::string path = dir_ + "/f-" + std::to_string(i % kFiles);
      std::string data = Contents(i % kFiles);
      int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
      bool ok = fd >= 0 && write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
      int err = errno;
      ok = ok && fsync(fd) == 0;
      if (!ok) err = errno;
      if (fd >= 0) close(fd);
      if (!ok) {
        error_ = path + ": " + strerror(err);
        failed_ = true;
        return;
      }
      written_ = i + 1;
    }
  }
  std::string dir_;
  std::atomic<bool> stop_{false};
  std::atomic<int> written_{0};
  std::atomic<bool> failed_{false};
  std::string error_;  // written by the thread before failed_
  std::thread thread_;
};

}  // namespace tandem::node::e2e

// End to end on this machine: tandem-controller (SQLite), three tandem-engine
// processes and a tandem-node per simulated node, driven with the calls and
// the path layout kubelet and the external-attacher use: CreateVolume ->
// ControllerPublish -> NodeStage -> NodePublish -> I/O -> NodeUnpublish ->
// NodeUnstage -> ControllerUnpublish, then the same volume on another node.
// Real FUSE file exports, loop devices, mkfs and mounts (root only).

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

namespace tandem::node {
namespace {

namespace csi = ::csi::v1;
using controller::testing::LocalCluster;
using controller::testing::Process;
using controller::testing::WaitFor;

constexpr int64_t kMiB = 1 << 20;

std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 60) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

csi::VolumeCapability Cap(bool block, const std::string& fs = "ext4") {
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
                           "--node-address=127.0.0.1", "--state-dir=" + n->root + "/state"},
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

  static LocalCluster* cluster_;
  static Status* setup_status_;
  static NodePlugin nodes_[2];
  std::unique_ptr<csi::Controller::Stub> ctl_;
  google::protobuf::Map<std::string, std::string> last_publish_context_;
};

LocalCluster* NodeEndToEndTest::cluster_ = nullptr;
Status* NodeEndToEndTest::setup_status_ = nullptr;
NodePlugin NodeEndToEndTest::nodes_[2];

// A tree of files with known contents.
std::map<std::string, std::string> MakeFiles(uint32_t seed) {
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

void WriteFiles(const std::string& root, const std::map<std::string, std::string>& files) {
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

void ExpectFiles(const std::string& root, const std::map<std::string, std::string>& files) {
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

TEST_F(NodeEndToEndTest, Ext4VolumeMovesToAnotherNodeWithEveryFsyncedByte) {
  const std::string id = CreateVolume("e2e-ext4", 256 * kMiB, false);
  ASSERT_FALSE(id.empty());
  auto files = MakeFiles(7);
  Attach(nodes_[0], id, "pod-a", false);
  WriteFiles(nodes_[0].target("pod-a", id), files);
  Detach(nodes_[0], id, "pod-a");

  Attach(nodes_[1], id, "pod-b", false);
  ExpectFiles(nodes_[1].target("pod-b", id), files);
  csi::NodeGetVolumeStatsRequest sreq;
  sreq.set_volume_id(id);
  sreq.set_volume_path(nodes_[1].target("pod-b", id));
  csi::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(nodes_[1].stub->NodeGetVolumeStats(Ctx().get(), sreq, &stats).ok());
  ASSERT_GE(stats.usage_size(), 1);
  EXPECT_GT(stats.usage(0).used(), 24 * 1024);
  Detach(nodes_[1], id, "pod-b");
}

// A pod deleted and a new one on the same node before the attach-detach
// controller detaches: kubelet unstages and stages again under the same
// ControllerPublish (the same publish_context and epoch). The engine is the
// epoch's owner again (its identity), so the volume comes back with every byte.
TEST_F(NodeEndToEndTest, PodReplacedOnTheSameNodeRestagesUnderOnePublish) {
  const std::string id = CreateVolume("e2e-restage", 128 * kMiB, false);
  ASSERT_FALSE(id.empty());
  auto files = MakeFiles(11);
  Attach(nodes_[0], id, "pod-a", false);
  WriteFiles(nodes_[0].target("pod-a", id), files);
  UnpublishAndUnstage(nodes_[0], id, "pod-a");
  StageAndPublish(nodes_[0], id, "pod-a2", false, "ext4", last_publish_context_);
  ExpectFiles(nodes_[0].target("pod-a2", id), files);
  Detach(nodes_[0], id, "pod-a2");
}

TEST_F(NodeEndToEndTest, XfsVolumeMovesToAnotherNodeWithEveryFsyncedByte) {
  // xfs wants at least 300 MiB.
  const std::string id = CreateVolume("e2e-xfs", 320 * kMiB, false, {{"fsType", "xfs"}}, "xfs");
  ASSERT_FALSE(id.empty());
  auto files = MakeFiles(17);
  Attach(nodes_[0], id, "pod-xa", false, "xfs");
  std::ifstream mounts("/proc/mounts");
  std::string line, fs;
  while (std::getline(mounts, line)) {
    if (line.find(nodes_[0].staging(id)) != std::string::npos) fs = line;
  }
  EXPECT_NE(fs.find(" xfs "), std::string::npos) << "staging mount: " << fs;
  WriteFiles(nodes_[0].target("pod-xa", id), files);
  Detach(nodes_[0], id, "pod-xa");
  Attach(nodes_[1], id, "pod-xb", false, "xfs");
  ExpectFiles(nodes_[1].target("pod-xb", id), files);
  Detach(nodes_[1], id, "pod-xb");
}

// Online expansion while mounted and in use: a 3-replica xfs volume grows
// (replicas, the live target, the FUSE file, the loop device, xfs_growfs) with
// its files intact; a Block volume's device takes the new size and carries
// data past the old end to another node. (ext4's online grow needs
// CAP_SYS_RESOURCE, which this test machine's root lacks: filesystem_test.)
TEST_F(NodeEndToEndTest, OnlineExpansionGrowsAMountedXfsAndABlockDevice) {
  const std::string id =
      CreateVolume("e2e-grow-xfs", 320 * kMiB, false, {{"fsType", "xfs"}}, "xfs");
  ASSERT_FALSE(id.empty());
  auto files = MakeFiles(23);
  Attach(nodes_[0], id, "pod-g", false, "xfs");
  const std::string mnt = nodes_[0].target("pod-g", id);
  WriteFiles(mnt, files);
  struct statvfs before, after;
  ASSERT_EQ(statvfs(mnt.c_str(), &before), 0);
  ExpandOnline(nodes_[0], id, mnt, 448 * kMiB);
  ASSERT_EQ(statvfs(mnt.c_str(), &after), 0);
  uint64_t grown = (after.f_blocks - before.f_blocks) * after.f_frsize;
  EXPECT_GE(grown, 100 * kMiB) << "xfs grew by " << grown << " bytes";
  ExpectFiles(mnt, files);
  Detach(nodes_[0], id, "pod-g");

  const std::string bid = CreateVolume("e2e-grow-block", 64 * kMiB, true);
  ASSERT_FALSE(bid.empty());
  Attach(nodes_[0], bid, "pod-h", true);
  const std::string dev = nodes_[0].target("pod-h", bid);
  ExpandOnline(nodes_[0], bid, dev, 128 * kMiB);
  int fd = open(dev.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint64_t size = 0;
  ASSERT_EQ(ioctl(fd, BLKGETSIZE64, &size), 0);
  EXPECT_EQ(size, 128 * kMiB);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, kMiB), 0);
  std::mt19937 rng(29);
  for (size_t i = 0; i < kMiB; ++i)
    static_cast<unsigned char*>(buf)[i] = static_cast<unsigned char>(rng());
  ASSERT_EQ(pwrite(fd, buf, kMiB, 100 * kMiB), static_cast<ssize_t>(kMiB));
  ASSERT_EQ(fdatasync(fd), 0);
  close(fd);
  Detach(nodes_[0], bid, "pod-h");
  Attach(nodes_[1], bid, "pod-i", true);
  void* back = nullptr;
  ASSERT_EQ(posix_memalign(&back, 4096, kMiB), 0);
  fd = open(nodes_[1].target("pod-i", bid).c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pread(fd, back, kMiB, 100 * kMiB), static_cast<ssize_t>(kMiB));
  close(fd);
  EXPECT_EQ(memcmp(buf, back, kMiB), 0);
  free(buf);
  free(back);
  Detach(nodes_[1], bid, "pod-i");
}

TEST_F(NodeEndToEndTest, BlockVolumeCarriesRawBlocksThroughThePublishedDeviceNode) {
  const std::string id = CreateVolume("e2e-block", 64 * kMiB, true);
  ASSERT_FALSE(id.empty());
  Attach(nodes_[0], id, "pod-c", true);
  const std::string dev = nodes_[0].target("pod-c", id);
  struct stat st;
  ASSERT_EQ(stat(dev.c_str(), &st), 0);
  ASSERT_TRUE(S_ISBLK(st.st_mode));
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 1 << 20), 0);
  std::mt19937 rng(11);
  for (size_t i = 0; i < (1 << 20); ++i)
    static_cast<unsigned char*>(buf)[i] = static_cast<unsigned char>(rng());
  int fd = open(dev.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, buf, 1 << 20, 5 * kMiB), 1 << 20);
  ASSERT_EQ(fdatasync(fd), 0);
  close(fd);
  Detach(nodes_[0], id, "pod-c");

  Attach(nodes_[1], id, "pod-d", true);
  void* back = nullptr;
  ASSERT_EQ(posix_memalign(&back, 4096, 1 << 20), 0);
  fd = open(nodes_[1].target("pod-d", id).c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pread(fd, back, 1 << 20, 5 * kMiB), 1 << 20);
  close(fd);
  EXPECT_EQ(memcmp(buf, back, 1 << 20), 0);
  free(buf);
  free(back);
  Detach(nodes_[1], id, "pod-d");
}

// Failover without detach: the node holding the mounted volume freezes (its
// engine, which hosts the target, SIGSTOPped), the CO force-detaches
// (ControllerUnpublish without NodeUnstage, as after the 6-minute timeout or
// the out-of-service taint), and the volume is staged on another node at once:
// every fsync'd byte is there, and the frozen target, once it runs again, has
// every write refused (fenced).
TEST_F(NodeEndToEndTest, FailoverToAnotherNodeFencesTheFrozenOneAndKeepsEveryFsyncedByte) {
  const std::string id = CreateVolume("e2e-failover", 128 * kMiB, false);
  ASSERT_FALSE(id.empty());
  auto files = MakeFiles(13);
  NodePlugin& old_node = nodes_[0];
  Attach(old_node, id, "pod-x", false);
  WriteFiles(old_node.target("pod-x", id), files);

  auto& frozen_engine = *cluster_->engines()[0].process;
  frozen_engine.Signal(SIGSTOP);
  const auto t0 = std::chrono::steady_clock::now();
  csi::ControllerUnpublishVolumeRequest cu;
  cu.set_volume_id(id);
  cu.set_node_id(old_node.name);
  csi::ControllerUnpublishVolumeResponse cu_resp;
  grpc::Status st = ctl_->ControllerUnpublishVolume(Ctx().get(), cu, &cu_resp);
  ASSERT_TRUE(st.ok()) << "forced ControllerUnpublish: " << st.error_message();
  Attach(nodes_[1], id, "pod-y", false);
  const double failover_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("failover_ms", std::to_string(static_cast<int>(failover_ms)));
  ExpectFiles(nodes_[1].target("pod-y", id), files);

  // The frozen node wakes up: its target may try to write, but every replica
  // the new publish fenced refuses its epoch, so nothing it sends is acknowledged.
  frozen_engine.Signal(SIGCONT);
  std::string stale = old_node.target("pod-x", id) + "/after-failover";
  int fd = open(stale.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  bool synced = false;
  if (fd >= 0) {
    std::string junk(64 * 1024, 'x');
    (void)!write(fd, junk.data(), junk.size());
    synced = fsync(fd) == 0;
    close(fd);
  }
  EXPECT_FALSE(synced) << "the fenced node's fsync succeeded: its target acknowledged a write";
  EXPECT_NE(access((nodes_[1].target("pod-y", id) + "/after-failover").c_str(), F_OK), 0);
  ExpectFiles(nodes_[1].target("pod-y", id), files);
  Detach(nodes_[1], id, "pod-y");
  // The old node's leftovers, as its tandem-node would clean them up on restart.
  csi::NodeUnpublishVolumeRequest up;
  up.set_volume_id(id);
  up.set_target_path(old_node.target("pod-x", id));
  csi::NodeUnpublishVolumeResponse up_resp;
  (void)old_node.stub->NodeUnpublishVolume(Ctx().get(), up, &up_resp);
  csi::NodeUnstageVolumeRequest us;
  us.set_volume_id(id);
  us.set_staging_target_path(old_node.staging(id));
  csi::NodeUnstageVolumeResponse us_resp;
  (void)old_node.stub->NodeUnstageVolume(Ctx().get(), us, &us_resp);
}

// A replica's engine killed (-9) while the mounted volume is being written:
// the application sees no error, health (NodeGetVolumeStats and
// ControllerGetVolume) turns DEGRADED naming the replica's state; the engine
// comes back on its ports, the target rebuilds it, health is HEALTHY again,
// and every written file reads back.
TEST_F(NodeEndToEndTest, ReplicaEngineKilledWhileWritingIsRebuiltAndReportedInHealth) {
  const std::string id = CreateVolume("e2e-kill-replica", 256 * kMiB, false);
  ASSERT_FALSE(id.empty());
  Attach(nodes_[0], id, "pod-k", false);
  const std::string mount = nodes_[0].target("pod-k", id);
  EXPECT_FALSE(Condition(nodes_[0], id, mount).abnormal())
      << Condition(nodes_[0], id, mount).message();

  FileWriter writer(mount + "/w");
  ASSERT_TRUE(writer.WaitForMore(20, std::chrono::seconds(60))) << writer.error();
  auto& victim = cluster_->engines()[2];
  victim.process->Kill();
  // The target notices the dead replica on its next request to it.
  csi::VolumeCondition degraded;
  bool reported = WaitFor(
      [&] {
        degraded = Condition(nodes_[0], id, mount);
        return degraded.abnormal() &&
               degraded.message().find(victim.data_address()) != std::string::npos;
      },
      std::chrono::seconds(20));
  ASSERT_TRUE(reported) << "health after the kill: " << degraded.message();
  EXPECT_EQ(degraded.message().rfind("DEGRADED", 0), 0u) << degraded.message();
  RecordProperty("degraded", degraded.message());
  const std::string ctl_message = ControllerCondition(id).message();
  EXPECT_EQ(ctl_message.rfind("DEGRADED", 0), 0u) << ctl_message;
  ASSERT_TRUE(writer.WaitForMore(20, std::chrono::seconds(60)))
      << "writes while degraded: " << writer.error();

  ASSERT_TRUE(cluster_->StartEngine(&victim).ok());
  csi::VolumeCondition healed;
  std::string rebuilding;  // a message seen while the rebuild ran, if one was
  bool healthy = WaitFor(
      [&] {
        healed = Condition(nodes_[0], id, mount);
        if (healed.message().find("REBUILDING") != std::string::npos) rebuilding = healed.message();
        return !healed.abnormal();
      },
      std::chrono::seconds(90));
  RecordProperty("rebuilding", rebuilding);
  EXPECT_TRUE(healthy) << "health after the restart: " << healed.message();
  EXPECT_EQ(healed.message(), "HEALTHY: 3 of 3 replicas in sync");
  EXPECT_FALSE(ControllerCondition(id).abnormal()) << ControllerCondition(id).message();
  ASSERT_TRUE(writer.WaitForMore(5, std::chrono::seconds(60))) << writer.error();
  writer.Stop();
  EXPECT_EQ(writer.error(), "") << "the application saw an I/O error";
  writer.Verify();
  Detach(nodes_[0], id, "pod-k");
}

// tandem-node killed (-9) and started again while the mounted volume is being
// written: the engine and the kernel carry the I/O, so the application sees
// no error; the restarted tandem-node adopts the staged volume (stats, then
// unpublish and unstage work).
TEST_F(NodeEndToEndTest, NodePluginRestartUnderWritesInterruptsNothingAndAdoptsTheVolume) {
  const std::string id = CreateVolume("e2e-node-restart", 256 * kMiB, false);
  ASSERT_FALSE(id.empty());
  NodePlugin& node = nodes_[0];
  Attach(node, id, "pod-r", false);
  const std::string mount = node.target("pod-r", id);
  FileWriter writer(mount + "/w");
  ASSERT_TRUE(writer.WaitForMore(10, std::chrono::seconds(60))) << writer.error();
  node.process->Kill();
  ASSERT_TRUE(writer.WaitForMore(10, std::chrono::seconds(60)))
      << "writes without tandem-node: " << writer.error();
  node.process = std::make_unique<Process>();
  unlink(node.socket().c_str());  // the killed one's: StartNode waits for the new one
  ASSERT_TRUE(StartNode(&node, cluster_->engines()[0]).ok());
  ASSERT_TRUE(writer.WaitForMore(10, std::chrono::seconds(60))) << writer.error();
  writer.Stop();
  EXPECT_EQ(writer.error(), "") << "the application saw an I/O error";
  EXPECT_GE(writer.written(), 30);
  csi::VolumeCondition c = Condition(node, id, mount);
  EXPECT_FALSE(c.abnormal()) << "the restarted node does not know the volume: " << c.message();
  writer.Verify();
  Detach(node, id, "pod-r");
  std::ifstream mounts("/proc/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    EXPECT_EQ(line.find(node.staging(id)), std::string::npos) << "still mounted: " << line;
  }
}

}  // namespace
}  // namespace tandem::node

// End to end on this machine: tandem-controller (SQLite), three tandem-engine
// processes and a tandem-node per simulated node, driven with the calls and
// the path layout kubelet and the external-attacher use: CreateVolume ->
// ControllerPublish -> NodeStage -> NodePublish -> I/O -> NodeUnpublish ->
// NodeUnstage -> ControllerUnpublish, then the same volume on another node.
// Real FUSE file exports, loop devices, mkfs and mounts (root only).

#include "node-plugin/testing_node_e2e.h"

namespace tandem::node::e2e {
namespace {

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
}  // namespace tandem::node::e2e

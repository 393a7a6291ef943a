#pragma once
// The fixture of the shrink tests (shrink_test.cc, shrink_edges_test.cc):
// a real tandem-controller (SQLite), three real tandem-engines started with
// --controller, live targets behind FUSE file exports, and every
// acknowledged (fdatasync'd) block read back after a new attach.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "controller/testing_fuse_target.h"
#include "replica-engine/proto/membership.grpc.pb.h"

namespace tandem::controller::cluster_testing {

inline constexpr uint64_t kSize = 8 << 20;
inline constexpr uint64_t kBlocks = kSize / kBlock;

class ShrinkFixture : public FuseTargetTest {
 protected:
  ShrinkFixture() : FuseTargetTest(kSize) {}

  // Unpublish, retried as the CO does (channels to restarted engines may be
  // in gRPC's reconnect backoff).
  bool Unpublish(const std::string& id, int node) {
    grpc::Status st;
    bool ok = testing::WaitFor([&] { return (st = UnpublishOnce(id, node)).ok(); },
                               std::chrono::seconds(60));
    EXPECT_TRUE(ok) << st.error_message();
    return ok;
  }
  // Restarts engine `e` and waits until the controller heard from it (its
  // channel may be in gRPC's reconnect backoff for a while).
  void RestartEngine(int e) {
    ASSERT_TRUE(cluster_.StartEngine(&cluster_.engines()[e]).ok());
    auto started = std::chrono::steady_clock::now();
    auto reg = cluster_.Registration();
    bool heard = testing::WaitFor(
        [&] {
          ::tandem::controller::v1::ListNodesRequest req;
          ::tandem::controller::v1::ListNodesResponse resp;
          if (!reg->ListNodes(Ctx().get(), req, &resp).ok()) return false;
          auto since = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - started)
                           .count();
          for (const auto& n : resp.nodes()) {
            if (n.node_id() == "e" + std::to_string(e) && n.last_seen_ms_ago() >= 0 &&
                n.last_seen_ms_ago() < since) {
              return true;
            }
          }
          return false;
        },
        std::chrono::seconds(30));
    ASSERT_TRUE(heard) << "the controller never heard from e" << e << " again";
  }
  grpc::Status SetReplicas(const std::string& id, int n) {
    return cluster_testing::SetReplicas(ctl_.get(), id, n, 60);
  }
  // SetReplicas retried while refused (a restarted engine not heard from
  // yet, a target not settled): its last answer.
  grpc::Status SetReplicasRetried(const std::string& id, int n) {
    grpc::Status st;
    testing::WaitFor([&] { return (st = SetReplicas(id, n)).ok(); }, std::chrono::seconds(30));
    return st;
  }
  // Which engines hold a replica of the volume, once it is `want` (a
  // replica the controller could not delete at once, its engine just
  // restarted, is deleted by the reconciler).
  std::vector<int> HoldersBecome(const std::string& id, const std::vector<int>& want) {
    std::vector<int> on;
    testing::WaitFor([&] { return (on = Holders(id)) == want; }, std::chrono::seconds(30));
    return on;
  }
  std::vector<int> Holders(const std::string& id) {
    std::vector<int> on;
    for (int e = 0; e < 3; ++e) {
      if (Engine(e).GetReplica(id, std::chrono::seconds(5)).ok()) on.push_back(e);
    }
    return on;
  }
  // A 3-replica volume published on e0 with its live target there (what
  // tandem-node builds), the FUSE file open for writing and round 1 written
  // over every block.
  struct Served {
    std::string id;
    PublishContext ctx;
    int fd = -1;
    std::vector<uint32_t> acked = std::vector<uint32_t>(kBlocks, 0);
  };
  void ServeOnE0(const std::string& name, Served* v) {
    v->id = CreateVolume(name);
    auto ctx = Publish(v->id, 0);
    ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
    v->ctx = *ctx;
    auto t = Attach(v->id, 0, *ctx);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    v->fd = open(t->export_path().c_str(), O_RDWR);
    ASSERT_GE(v->fd, 0) << t->export_path() << ": " << strerror(errno);
    EXPECT_EQ(WriteRound(v->fd, 1, &v->acked), 0);
  }
  // A volume served on e0, detached and lowered to 2 replicas while e2 is
  // down: its replica there stays retired (its file exists) with e2 back. The
  // reconciler, which would delete it, is kept out.
  void RetireTheReplicaOnE2(const std::string& name, Served* v) {
    ASSERT_TRUE(cluster_.StartController({"--reconcile-interval-ms=600000"}).ok());
    ctl_ = cluster_.Controller();
    ASSERT_NO_FATAL_FAILURE(ServeOnE0(name, v));
    close(v->fd);
    ASSERT_TRUE(Engine(0).DestroyTarget(v->id, std::chrono::seconds(30)).ok());
    ASSERT_TRUE(Unpublish(v->id, 0));
    cluster_.engines()[2].process->Kill();
    grpc::Status st = SetReplicas(v->id, 2);
    ASSERT_TRUE(st.ok()) << st.error_message();
    RestartEngine(2);
  }
  // What a target that died before starting the generation would have
  // recorded: a shrink to `ids` for the generation after `live`'s, with id
  // `generation_id`, numbered after the target's own calls (which are
  // numbered from the wall clock in microseconds).
  grpc::Status RecordShrinkNeverStarted(const std::string& id, uint64_t epoch,
                                        const engine::v1::Target& live, uint64_t generation_id,
                                        const std::vector<std::string>& ids) {
    auto stub = ::tandem::controller::v1::Membership::NewStub(grpc::CreateChannel(
        "unix:" + cluster_.root() + "/csi.sock", grpc::InsecureChannelCredentials()));
    ::tandem::controller::v1::InSyncRequest req;
    req.set_volume_id(id);
    req.set_epoch(epoch);
    auto now = std::chrono::system_clock::now().time_since_epoch();
    req.set_seq(
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) +
        1000000);
    req.set_generation(live.generation() + 1);
    req.set_generation_id(generation_id);
    for (const auto& r : ids) req.add_replica_ids(r);
    ::tandem::controller::v1::InSyncResponse resp;
    return stub->ShrinkInSync(Ctx().get(), req, &resp);
  }
  int EngineOf(const std::string& data_address) {
    for (int e = 0; e < 3; ++e) {
      if (cluster_.engines()[e].data_address() == data_address) return e;
    }
    return -1;
  }
  // One round of writes over every block (pwrite + fdatasync each); what
  // was acknowledged goes into `acked`. The number of failures.
  static int WriteRound(int fd, uint32_t round, std::vector<uint32_t>* acked) {
    std::vector<char> buf(kBlock);
    int failures = 0;
    for (uint64_t b = 0; b < kBlocks; ++b) {
      Fill(&buf, b, round);
      if (pwrite(fd, buf.data(), kBlock, static_cast<off_t>(b * kBlock)) !=
              static_cast<ssize_t>(kBlock) ||
          fdatasync(fd) != 0) {
        ++failures;
        continue;
      }
      (*acked)[b] = round;
    }
    return failures;
  }
  // Attaches on `node` and counts the blocks differing from `acked`.
  int BadBlocks(const std::string& id, int node, const std::vector<uint32_t>& acked) {
    auto ctx = Publish(id, node);
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    if (!ctx.ok()) return -1;
    auto t = Attach(id, node, *ctx);
    EXPECT_TRUE(t.ok()) << t.status().ToString() << " (run dir " << cluster_.root() << ")";
    if (!t.ok()) return -1;
    int fd = open(t->export_path().c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    std::vector<char> got(kBlock), want(kBlock);
    int bad = 0;
    for (uint64_t b = 0; b < kBlocks && fd >= 0; ++b) {
      EXPECT_EQ(pread(fd, got.data(), kBlock, static_cast<off_t>(b * kBlock)),
                static_cast<ssize_t>(kBlock));
      Fill(&want, b, acked[b]);
      bad += std::memcmp(got.data(), want.data(), kBlock) != 0;
    }
    if (fd >= 0) close(fd);
    EXPECT_TRUE(Engine(node).DestroyTarget(id, std::chrono::seconds(30)).ok());
    Unpublish(id, node);
    return bad;
  }
};

}  // namespace tandem::controller::cluster_testing

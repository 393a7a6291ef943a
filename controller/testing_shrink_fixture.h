#pragma once
// The fixture of the shrink tests (shrink_test.cc, shrink_settle_test.cc):
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

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "csi/publish_context.h"
#include "replica-engine/api/engine_client.h"
#include "replica-engine/proto/membership.grpc.pb.h"
#include "tests/harness/local_cluster.h"

namespace tandem::controller::shrink_testing {

namespace csi = ::csi::v1;
using testing::LocalCluster;
using PublishContext = ::tandem::csi::PublishContext;

inline constexpr uint64_t kSize = 8 << 20;
inline constexpr size_t kBlock = 64 << 10;
inline constexpr uint64_t kBlocks = kSize / kBlock;

inline std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

inline void Fill(std::vector<char>* buf, uint64_t block, uint32_t round) {
  if (round == 0) {
    std::fill(buf->begin(), buf->end(), 0);
    return;
  }
  for (size_t i = 0; i < buf->size(); i += 8) {
    uint64_t v = (block << 32) ^ round ^ (i * 0x9E3779B97F4A7C15ull);
    std::memcpy(buf->data() + i, &v, 8);
  }
}

class ShrinkFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE file export)";
    }
    ASSERT_TRUE(cluster_.StartEngines(3).ok());
    ASSERT_TRUE(cluster_.StartController().ok());
    ASSERT_TRUE(cluster_.RegisterEngines().ok());
    ctl_ = cluster_.Controller();
  }

  std::string CreateVolume(const std::string& name) {
    csi::CreateVolumeRequest req;
    req.set_name(name);
    req.mutable_capacity_range()->set_required_bytes(kSize);
    *req.add_volume_capabilities() = Cap();
    (*req.mutable_parameters())["replicas"] = "3";
    csi::CreateVolumeResponse resp;
    grpc::Status st = ctl_->CreateVolume(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.volume().volume_id();
  }
  static csi::VolumeCapability Cap() {
    csi::VolumeCapability cap;
    cap.mutable_block();
    cap.mutable_access_mode()->set_mode(csi::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    return cap;
  }
  Result<PublishContext> Publish(const std::string& id, int node) {
    csi::ControllerPublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_node_id("e" + std::to_string(node));
    *req.mutable_volume_capability() = Cap();
    csi::ControllerPublishVolumeResponse resp;
    grpc::Status st = ctl_->ControllerPublishVolume(Ctx().get(), req, &resp);
    if (!st.ok()) return Status(static_cast<StatusCode>(st.error_code()), st.error_message());
    return ::tandem::csi::DecodePublishContext(resp.publish_context());
  }
  // Unpublish, retried as the CO does (channels to restarted engines may be
  // in gRPC's reconnect backoff).
  bool Unpublish(const std::string& id, int node) {
    csi::ControllerUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_node_id("e" + std::to_string(node));
    grpc::Status st;
    bool ok = testing::WaitFor(
        [&] {
          csi::ControllerUnpublishVolumeResponse resp;
          return (st = ctl_->ControllerUnpublishVolume(Ctx().get(), req, &resp)).ok();
        },
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
    csi::ControllerModifyVolumeRequest mod;
    mod.set_volume_id(id);
    (*mod.mutable_mutable_parameters())["replicas"] = std::to_string(n);
    csi::ControllerModifyVolumeResponse resp;
    return ctl_->ControllerModifyVolume(Ctx(60).get(), mod, &resp);
  }
  // What tandem-node does at NodeStage: the target from publish_context,
  // exported as a FUSE file.
  Result<engine::v1::Target> Attach(const std::string& id, int node, const PublishContext& ctx) {
    engine::v1::CreateTargetRequest treq =
        testing::TargetRequestFor(id, ctx, cluster_.engines()[node].data_address());
    treq.set_reconnect_interval_ms(200);
    treq.set_request_timeout_ms(2000);
    treq.set_export_kind(engine::v1::EXPORT_KIND_FUSE_FILE);
    return Engine(node).CreateTarget(treq, std::chrono::seconds(30));
  }
  api::EngineClient Engine(int node) {
    return api::EngineClient(cluster_.engines()[node].grpc_address(), "");
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

  LocalCluster cluster_;
  std::unique_ptr<csi::Controller::Stub> ctl_;
};

}  // namespace tandem::controller::shrink_testing

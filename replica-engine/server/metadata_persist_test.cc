// MARK_DIRTY and CLEAR_DIRTY through the replica server's asynchronous
// metadata persist (issue 10): answered only once durable, batched, never an
// fdatasync on the loop, and a region re-dirtied after a CLEAR_DIRTY stays
// dirty on disk. Real server and client over 127.0.0.1, real backends; a
// forwarding backend holds the metadata writes (FUA) back to observe the
// window between "changed in memory" and "durable".

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/replica/replica_metadata.h"
#include "replica-engine/server/replica_server.h"
#include "tests/support/gate_backend.h"

namespace tandem::server {
namespace {

using client::ClientOptions;
using client::ClientRequest;
using client::ReplicaClient;
using protocol::Opcode;

constexpr uint64_t kSize = 64ull << 20;
constexpr uint32_t kRegion = 64 * 1024;

struct Listener : ReplicaClient::Listener {
  bool connected = false;
  bool disconnected = false;
  Status why;
  void OnConnected(const protocol::ReplicaInfo&) override { connected = true; }
  void OnDisconnected(const Status& w) override {
    disconnected = true;
    why = w;
  }
};

struct Op {
  ClientRequest req;
  bool done = false;
  Op() = default;
  Op(const Op&) = delete;  // req.ctx points here
  Op& operator=(const Op&) = delete;
  void Reset(Opcode op, uint64_t off, uint32_t len, void* buf, uint16_t flags = 0) {
    req = ClientRequest{};
    done = false;
    req.op = op;
    req.offset = off;
    req.length = len;
    req.buf = buf;
    req.flags = flags;
    req.ctx = this;
    req.done = [](ClientRequest* r) { static_cast<Op*>(r->ctx)->done = true; };
  }
};

class MetadataPersistTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-meta-persist-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto b = backend::BackendFactory::Create(GetParam());
    if (!b.ok()) GTEST_SKIP() << "backend " << GetParam() << ": " << b.status().ToString();
    auto gate = std::make_unique<testing::GateBackend>(std::move(*b),
                                                       testing::GateBackend::Holds::kFuaWrites);
    gate_ = gate.get();
    backend_ = std::move(gate);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_);
    ASSERT_TRUE(manager_->LoadAll().ok());
    for (const char* vol : {"a", "b"}) {
      replica::ReplicaConfig cfg;
      cfg.volume_id = vol;
      cfg.replica_id = std::string("r-") + vol;
      cfg.size = kSize;
      cfg.dirty_region_size = kRegion;
      // No activity log: a write then needs no metadata persist, so what
      // the gate holds is only what MARK/CLEAR/first touches ask for.
      cfg.activity_extent_size = 0;
      ASSERT_TRUE(manager_->Create(cfg).ok());
    }
    ServerOptions opts;
    opts.buffer_pool_bytes = 32ull << 20;
    opts.max_inflight_per_session = 128;
    server_ = std::make_unique<ReplicaServer>(manager_.get(), backend_.get(), opts);
    ASSERT_TRUE(server_->Start().ok());
    buf_ = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
    std::memset(buf_, 0x5a, 4096);
  }
  void TearDown() override {
    if (gate_ != nullptr) gate_->Open();
    clients_.clear();
    if (server_) server_->Stop();
    server_.reset();
    if (manager_) (void)manager_->CloseAll();
    manager_.reset();
    backend_.reset();
    std::free(buf_);
    std::filesystem::remove_all(dir_);
  }

  ReplicaClient* Connect(Listener* l, const char* volume) {
    ClientOptions o;
    o.port = server_->port();
    o.volume_id = volume;
    o.epoch = 1;
    o.target_id = 11;
    o.max_inflight = 128;
    clients_.push_back(std::make_unique<ReplicaClient>(&loop_, o, l));
    EXPECT_TRUE(clients_.back()->Connect().ok());
    EXPECT_TRUE(RunUntil([&] { return l->connected || l->disconnected; }));
    EXPECT_TRUE(l->connected) << l->why.ToString();
    return clients_.back().get();
  }

  bool RunUntil(const std::function<bool()>& pred, int timeout_ms = 10000) {
    const uint64_t deadline = MonotonicNanos() + uint64_t(timeout_ms) * 1000000ull;
    while (!pred()) {
      if (MonotonicNanos() > deadline) return false;
      loop_.RunOnce(10);
    }
    return true;
  }
  // Runs the loop for about `ms` (requests that must NOT complete meanwhile).
  void RunFor(int ms) {
    const uint64_t end = MonotonicNanos() + uint64_t(ms) * 1000000ull;
    while (MonotonicNanos() < end) loop_.RunOnce(5);
  }

  StatusCode Do(ReplicaClient* c, Opcode op, uint64_t off, uint32_t len, void* buf,
                uint16_t flags = 0) {
    Op o;
    o.Reset(op, off, len, buf, flags);
    c->Submit(&o.req);
    EXPECT_TRUE(RunUntil([&] { return o.done; }));
    return o.req.status;
  }

  // What a crash right now would leave: the newest valid slot on disk.
  replica::ReplicaMetadata OnDisk(const char* volume, uint64_t* seq = nullptr) {
    auto f = replica::MetadataFile::Open(dir_ + "/" + volume + "/meta");
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    if (!f.ok()) return {};
    if (seq != nullptr) *seq = (*f)->sequence();
    return (*f)->current();
  }
  static bool Bit(const replica::ReplicaMetadata& md, uint64_t region) {
    return (md.dirty_map[region / 8] >> (region % 8)) & 1;
  }

  std::string dir_;
  std::unique_ptr<backend::StorageBackend> backend_;
  testing::GateBackend* gate_ = nullptr;  // holds the metadata persists (FUA writes)
  std::unique_ptr<replica::ReplicaManager> manager_;
  std::unique_ptr<ReplicaServer> server_;
  EventLoop loop_;
  std::vector<std::unique_ptr<ReplicaClient>> clients_;
  uint8_t* buf_ = nullptr;
};

TEST_P(MetadataPersistTest, MarkDirtyStormSharesMetadataPersists) {
  Listener l;
  ReplicaClient* c = Connect(&l, "b");
  uint64_t seq_before = 0;
  OnDisk("b", &seq_before);
  // 96 MARK_DIRTY of distinct regions in flight at once: each needs its bit
  // persisted; a synchronous update each would be 96 slot writes + fdatasyncs.
  constexpr int kMarks = 96;
  std::vector<Op> ops(kMarks);
  for (int i = 0; i < kMarks; ++i) {
    ops[i].Reset(Opcode::kMarkDirty, uint64_t(i) * 3 * kRegion, kRegion, nullptr);
    c->Submit(&ops[i].req);
  }
  ASSERT_TRUE(RunUntil([&] {
    for (Op& o : ops) {
      if (!o.done) return false;
    }
    return true;
  }));
  for (Op& o : ops) EXPECT_EQ(o.req.status, StatusCode::kOk);
  uint64_t seq_after = 0;
  replica::ReplicaMetadata md = OnDisk("b", &seq_after);
  for (int i = 0; i < kMarks; ++i) EXPECT_TRUE(Bit(md, uint64_t(i) * 3)) << "region " << i * 3;
  EXPECT_FALSE(Bit(md, 1));
  // Group commit: the marks of one loop iteration share one slot write (the
  // requests arrive in a few TCP reads, so a few persists, never one each).
  EXPECT_LE(seq_after - seq_before, uint64_t{kMarks / 8})
      << "metadata updates for " << kMarks << " MARK_DIRTY";
}

TEST_P(MetadataPersistTest, MarkDirtyIsAnsweredOnlyOnceDurableWithoutHoldingOtherVolumes) {
  Listener la, lb;
  ReplicaClient* a = Connect(&la, "a");
  ReplicaClient* b = Connect(&lb, "b");
  gate_->Close();
  Op mark;
  mark.Reset(Opcode::kMarkDirty, 5 * kRegion, 2 * kRegion, nullptr);
  b->Submit(&mark.req);
  ASSERT_TRUE(RunUntil([&] { return gate_->held() > 0; })) << "no metadata write was started";
  // The persist is held: the loop keeps serving the other volume meanwhile,
  // and the MARK_DIRTY is not answered (its bits are not on disk yet).
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(Do(a, Opcode::kWrite, uint64_t(i) * 4096, 4096, buf_), StatusCode::kOk);
  }
  RunFor(50);
  EXPECT_FALSE(mark.done) << "MARK_DIRTY answered before its metadata write completed";
  EXPECT_FALSE(Bit(OnDisk("b"), 5));
  gate_->Open();
  ASSERT_TRUE(RunUntil([&] { return mark.done; }));
  EXPECT_EQ(mark.req.status, StatusCode::kOk);

  // Acknowledged means durable: a crash now (no Close, the engine gone) and
  // a reopen find both bits.
  clients_.clear();
  server_->Stop();
  server_.reset();
  manager_.reset();  // released unclean: nothing written at shutdown
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_);
  ASSERT_TRUE(manager_->LoadAll().ok());
  auto r = manager_->Get("b");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->was_clean());
  EXPECT_TRUE((*r)->IsRegionDirty(5));
  EXPECT_TRUE((*r)->IsRegionDirty(6));
  EXPECT_FALSE((*r)->IsRegionDirty(7));
}

TEST_P(MetadataPersistTest, ClearDirtyKeepsARegionReDirtiedMeanwhile) {
  Listener l;
  ReplicaClient* c = Connect(&l, "b");
  // Tracking on; regions 2 and 3 durably dirty from writes.
  ASSERT_EQ(Do(c, Opcode::kSetGeneration, 1, 0, nullptr, protocol::kFlagTrackDirty),
            StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 2 * kRegion, 4096, buf_), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 3 * kRegion, 4096, buf_), StatusCode::kOk);
  ASSERT_TRUE(Bit(OnDisk("b"), 2) && Bit(OnDisk("b"), 3));

  // CLEAR_DIRTY of both, then (before the clear is durable) a write to
  // region 2: the clear must not win on disk for region 2.
  gate_->Close();
  Op clear, write;
  clear.Reset(Opcode::kClearDirty, 2 * kRegion, 2 * kRegion, nullptr);
  c->Submit(&clear.req);
  ASSERT_TRUE(RunUntil([&] { return gate_->held() > 0; })) << "no metadata write was started";
  write.Reset(Opcode::kWrite, 2 * kRegion + 8192, 4096, buf_);
  c->Submit(&write.req);
  RunFor(50);
  EXPECT_FALSE(clear.done) << "CLEAR_DIRTY answered before its metadata write completed";
  EXPECT_FALSE(write.done) << "a write reached the disk before its re-dirtied bit";
  gate_->Open();
  ASSERT_TRUE(RunUntil([&] { return clear.done && write.done; }));
  EXPECT_EQ(clear.req.status, StatusCode::kOk);
  EXPECT_EQ(write.req.status, StatusCode::kOk);
  replica::ReplicaMetadata md = OnDisk("b");
  EXPECT_TRUE(Bit(md, 2)) << "region re-dirtied after the CLEAR_DIRTY was cleared on disk";
  EXPECT_FALSE(Bit(md, 3));
  // A CLEAR_DIRTY with nothing to change is answered without a persist.
  uint64_t seq0 = 0, seq1 = 0;
  OnDisk("b", &seq0);
  ASSERT_EQ(Do(c, Opcode::kClearDirty, 10 * kRegion, kRegion, nullptr), StatusCode::kOk);
  OnDisk("b", &seq1);
  EXPECT_EQ(seq1, seq0);
  // Misaligned clears are refused as before, nothing changed.
  EXPECT_EQ(Do(c, Opcode::kClearDirty, 2 * kRegion + 4096, kRegion, nullptr),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(Bit(OnDisk("b"), 2));
}

INSTANTIATE_TEST_SUITE_P(Backends, MetadataPersistTest, ::testing::Values("io_uring", "libaio"),
                         [](const auto& p) {
                           return std::string(p.param) == "io_uring" ? "IoUring" : "Libaio";
                         });

}  // namespace
}  // namespace tandem::server

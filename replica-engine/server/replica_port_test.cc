// ReplicaPort without a session: the replica rules on a real backend (a temp
// file, io_uring or libaio as "auto" picks), driven on the server's loop as
// an in-process user does.

#include "replica-engine/server/replica_port.h"

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "tests/support/gate_backend.h"
#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

using protocol::Opcode;
using protocol::WireStatus;

// A port request and the flag its completion sets (on the server's loop).
struct PortOp {
  PortRequest req;
  std::atomic<bool> done{false};
  static void Done(PortRequest* r) { static_cast<PortOp*>(r->ctx)->done = true; }
  PortOp(Opcode op, uint64_t offset, uint32_t length, void* buf) {
    req.op = op;
    req.offset = offset;
    req.length = length;
    req.buf = buf;
    req.payload_length = op == Opcode::kWrite ? length : 0;
    req.done = &PortOp::Done;
    req.ctx = this;
  }
};

class ReplicaPortTest : public ServerFixture {
 protected:
  void TearDown() override {
    if (port_obj_) OnLoop([&] { port_obj_.reset(); });
    ServerFixture::TearDown();
  }

  // Runs fn on the server's loop and waits for it.
  template <typename Fn>
  auto OnLoop(Fn fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    server_->loop()->Post([&task] { task(); });
    return result.get();
  }

  WireStatus OpenPort(const std::string& volume, uint64_t epoch, uint64_t target_id = 7) {
    return OnLoop([&] {
      port_obj_ = std::make_unique<ReplicaPort>(server_.get(), "in-process", 64);
      protocol::HelloRequest hello{epoch, volume, kToken, target_id};
      bool retry = false;
      WireStatus st = port_obj_->Open(hello, &retry);
      EXPECT_FALSE(retry);
      return st;
    });
  }

  // Starts op on the loop; kOk when it completed (op->req.status is its
  // answer), else Start's refusal.
  WireStatus Run(PortOp* op) {
    const WireStatus st = OnLoop([&] { return port_obj_->Start(&op->req); });
    if (st != WireStatus::kOk) {
      EXPECT_FALSE(op->done) << "a refused request must not complete";
      return st;
    }
    for (int i = 0; i < 10000 && !op->done; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(op->done) << "no completion within 10 s";
    return WireStatus::kOk;
  }

  std::unique_ptr<ReplicaPort> port_obj_;
};

TEST_F(ReplicaPortTest, WriteThenReadReturnsTheBytes) {
  StartServer();
  ASSERT_EQ(OpenPort("vol-1", 1), WireStatus::kOk);
  void* out = AlignedBuffer(8192);
  void* in = AlignedBuffer(8192);
  for (int i = 0; i < 8192; ++i) static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(i * 7 + 3);
  std::memset(in, 0, 8192);

  PortOp w(Opcode::kWrite, 65536, 8192, out);
  // The first write to an extent waits for its activity-log bit to be
  // persisted; it still completes through the callback, never inside Start.
  bool done_inside_start = true;
  ASSERT_EQ(OnLoop([&] {
              WireStatus st = port_obj_->Start(&w.req);
              done_inside_start = w.done;
              return st;
            }),
            WireStatus::kOk);
  EXPECT_FALSE(done_inside_start);
  for (int i = 0; i < 10000 && !w.done; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(w.done);
  EXPECT_EQ(w.req.status, WireStatus::kOk);

  PortOp f(Opcode::kFlush, 0, 0, nullptr);
  ASSERT_EQ(Run(&f), WireStatus::kOk);
  EXPECT_EQ(f.req.status, WireStatus::kOk);

  PortOp r(Opcode::kRead, 65536, 8192, in);
  ASSERT_EQ(Run(&r), WireStatus::kOk);
  EXPECT_EQ(r.req.status, WireStatus::kOk);
  EXPECT_EQ(std::memcmp(in, out, 8192), 0);

  // The port's GET_INFO is the HELLO reply's ReplicaInfo.
  PortRequest info;
  info.op = Opcode::kGetInfo;
  ASSERT_EQ(OnLoop([&] { return port_obj_->Control(&info); }), WireStatus::kOk);
  protocol::ReplicaInfo decoded;
  ASSERT_TRUE(protocol::DecodeReplicaInfo(info.control, &decoded).ok());
  EXPECT_EQ(decoded.size, kVolumeSize);
  EXPECT_EQ(decoded.highest_epoch, 1u);
  std::free(out);
  std::free(in);
}

TEST_F(ReplicaPortTest, RangeAndShapeAreCheckedBeforeAnythingStarts) {
  StartServer();
  ASSERT_EQ(OpenPort("vol-1", 1), WireStatus::kOk);
  void* buf = AlignedBuffer(8192);
  PortOp past(Opcode::kWrite, kVolumeSize - 4096, 8192, buf);
  EXPECT_EQ(Run(&past), WireStatus::kOutOfRange);
  PortOp beyond(Opcode::kRead, kVolumeSize, 4096, buf);
  EXPECT_EQ(Run(&beyond), WireStatus::kOutOfRange);
  PortOp unaligned(Opcode::kWrite, 100, 4096, buf);
  EXPECT_EQ(Run(&unaligned), WireStatus::kInvalid);
  PortOp empty(Opcode::kRead, 0, 0, buf);
  EXPECT_EQ(Run(&empty), WireStatus::kInvalid);
  // A WRITE whose data is not all there (the frame's payload rule).
  PortOp torn(Opcode::kWrite, 0, 8192, buf);
  torn.req.payload_length = 4096;
  EXPECT_EQ(Run(&torn), WireStatus::kInvalid);
  // MARK_DIRTY is range-checked like a write; a TRIM carries no data.
  PortOp mark(Opcode::kMarkDirty, kVolumeSize, 4096, nullptr);
  EXPECT_EQ(Run(&mark), WireStatus::kOutOfRange);
  PortOp trim(Opcode::kTrim, 0, 4096, nullptr);
  trim.req.payload_length = 4096;
  EXPECT_EQ(Run(&trim), WireStatus::kInvalid);
  // Control requests are not started as I/O.
  PortOp info(Opcode::kGetInfo, 0, 0, nullptr);
  EXPECT_EQ(Run(&info), WireStatus::kUnsupported);
  std::free(buf);
}

TEST_F(ReplicaPortTest, AnOlderEpochIsRefusedAndANewerHelloSupersedesThePort) {
  StartServer();
  ASSERT_EQ(OpenPort("vol-1", 5), WireStatus::kOk);
  void* buf = AlignedBuffer(4096);
  std::memset(buf, 0xab, 4096);
  PortOp ok(Opcode::kWrite, 0, 4096, buf);
  ASSERT_EQ(Run(&ok), WireStatus::kOk);
  EXPECT_EQ(ok.req.status, WireStatus::kOk);

  // A second in-process port below the highest epoch: refused.
  EXPECT_EQ(OnLoop([&] {
              ReplicaPort old(server_.get(), "old", 64);
              protocol::HelloRequest hello{3, "vol-1", kToken, 9};
              bool retry = false;
              return old.Open(hello, &retry);
            }),
            WireStatus::kStaleEpoch);

  // A newer target's HELLO over TCP supersedes the port: every later request
  // is answered STALE_EPOCH (refused at Start), so its target fences itself.
  TestListener l;
  client::ReplicaClient* c = Connect(&l, Options("vol-1", 6));
  ASSERT_TRUE(l.connected);
  EXPECT_TRUE(OnLoop([&] { return port_obj_->superseded(); }));
  PortOp late(Opcode::kWrite, 4096, 4096, buf);
  EXPECT_EQ(Run(&late), WireStatus::kStaleEpoch);
  PortOp read(Opcode::kRead, 0, 4096, buf);
  EXPECT_EQ(Run(&read), WireStatus::kStaleEpoch);
  // The new target's requests go through.
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  std::free(buf);
}

TEST_F(ReplicaPortTest, DetachVolumeClosesAnInProcessPort) {
  StartServer();
  ASSERT_EQ(OpenPort("vol-1", 1), WireStatus::kOk);
  void* buf = AlignedBuffer(4096);
  std::memset(buf, 7, 4096);
  PortOp w(Opcode::kWrite, 0, 4096, buf);
  ASSERT_EQ(Run(&w), WireStatus::kOk);
  // As for a session: closed, and nothing of it touches the replica after
  // DetachVolume returned (the caller then deletes the files).
  ASSERT_TRUE(server_->DetachVolume("vol-1").ok());
  EXPECT_TRUE(OnLoop([&] { return port_obj_->closed(); }));
  PortOp late(Opcode::kWrite, 4096, 4096, buf);
  EXPECT_EQ(Run(&late), WireStatus::kNotReady);
  manager_->EndDelete("vol-1");
  std::free(buf);
}

TEST_F(ReplicaPortTest, AWrongTokenOrAnUnknownVolumeIsRefused) {
  StartServer();
  EXPECT_EQ(OpenPort("no-such-volume", 1), WireStatus::kNotFound);
  EXPECT_EQ(OnLoop([&] {
              ReplicaPort p(server_.get(), "bad-token", 64);
              protocol::HelloRequest hello{1, "vol-1", "wrong", 9};
              bool retry = false;
              return p.Open(hello, &retry);
            }),
            WireStatus::kAuthFailed);
}

// The same, on a backend whose data writes a test can hold on the "disk".
class ReplicaPortGatedTest : public ReplicaPortTest {
 protected:
  void SetUp() override {
    ReplicaPortTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(manager_->CloseAll().ok());
    manager_.reset();
    auto gate = std::make_unique<GateBackend>(std::move(backend_), GateBackend::Holds::kDataWrites);
    gate_ = gate.get();
    backend_ = std::move(gate);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
  }
  void TearDown() override {
    if (gate_ != nullptr) gate_->Open();
    ReplicaPortTest::TearDown();
  }
  GateBackend* gate_ = nullptr;
};

TEST_F(ReplicaPortGatedTest, DetachVolumeWaitsForAClosedPortsIoStillOnTheDisk) {
  StartServer();
  ASSERT_EQ(OpenPort("vol-1", 1), WireStatus::kOk);
  void* buf = AlignedBuffer(4096);
  std::memset(buf, 7, 4096);
  gate_->Close();
  PortOp w(Opcode::kWrite, 0, 4096, buf);
  ASSERT_EQ(OnLoop([&] { return port_obj_->Start(&w.req); }), WireStatus::kOk);
  for (int i = 0; i < 10000 && gate_->held() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_GT(gate_->held(), 0u);
  // Closed already (a first DetachVolume, or its user), its write still on
  // the disk: the write still ends with NoteWriteDone on the replica, so a
  // (retried) DetachVolume must not return before it, or the caller closes
  // the replica under it.
  OnLoop([&] { port_obj_->Close(); });
  auto detached = std::async(std::launch::async, [&] { return server_->DetachVolume("vol-1"); });
  EXPECT_EQ(detached.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout)
      << "DetachVolume returned while a closed port's write was still in flight";
  gate_->Open();
  ASSERT_EQ(detached.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(detached.get().ok());
  // Its `done` runs just after the port's bookkeeping signalled the detach.
  for (int i = 0; i < 10000 && !w.done; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(w.done);
  EXPECT_EQ(OnLoop([&] { return port_obj_->inflight(); }), 0u);
  manager_->EndDelete("vol-1");
  std::free(buf);
}

// A port's user closing inside a backend completion (of another port's
// request) cannot reap the disk: DrainPort must say so at once, not spin on
// a nested Reap that reaps nothing until its deadline, with the loop stuck.
TEST_F(ReplicaPortGatedTest, DrainPortInsideABackendCompletionReturnsAtOnce) {
  StartServer();
  ASSERT_EQ(OpenPort("vol-1", 1), WireStatus::kOk);
  void* buf = AlignedBuffer(2 * 4096);
  std::memset(buf, 7, 2 * 4096);
  gate_->Close();
  PortOp w(Opcode::kWrite, 0, 4096, buf);
  ASSERT_EQ(OnLoop([&] { return port_obj_->Start(&w.req); }), WireStatus::kOk);
  for (int i = 0; i < 10000 && gate_->held() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_GT(gate_->held(), 0u);

  struct DrainOnDone {
    PortRequest req;
    ReplicaServer* server;
    ReplicaPort* victim;
    std::atomic<bool> done{false};
    std::atomic<int> drained{-1};
  } d;
  d.server = server_.get();
  d.victim = port_obj_.get();
  d.req.op = Opcode::kRead;
  d.req.length = 4096;
  d.req.buf = static_cast<char*>(buf) + 4096;
  d.req.ctx = &d;
  d.req.done = [](PortRequest* r) {
    auto* self = static_cast<DrainOnDone*>(r->ctx);
    self->drained = self->server->DrainPort(self->victim, 30000) ? 1 : 0;
    self->done = true;
  };
  std::unique_ptr<ReplicaPort> other;
  ASSERT_EQ(OnLoop([&] {
              other = std::make_unique<ReplicaPort>(server_.get(), "other", 64);
              protocol::HelloRequest hello{1, "vol-2", kToken, 8};
              bool retry = false;
              const WireStatus st = other->Open(hello, &retry);
              return st == WireStatus::kOk ? other->Start(&d.req) : st;
            }),
            WireStatus::kOk);
  // Well under DrainPort's 30 s: it must not have waited for the held write.
  for (int i = 0; i < 10000 && !d.done; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(d.done) << "DrainPort inside a completion kept the loop";
  EXPECT_EQ(d.drained, 0);
  EXPECT_FALSE(w.done);
  gate_->Open();
  for (int i = 0; i < 10000 && !w.done; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(w.done);
  OnLoop([&] { other.reset(); });
  std::free(buf);
}

}  // namespace
}  // namespace tandem::server::testing

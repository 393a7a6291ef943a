// LocalReplicaChannel against a real ReplicaServer (real backend on temp
// files): the ReplicaChannel behaviours a target relies on, in process. The
// channel runs on the server's loop (thread), as in the engine; the test
// hands it work through Post and waits for the callbacks.

#include "replica-engine/local/local_replica_channel.h"

#include <unistd.h>

#include <csignal>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "replica-engine/server/replica_server.h"
#include "tests/support/gate_backend.h"
#include "tests/support/testing_server.h"

namespace tandem::local {
namespace {

using client::ClientRequest;
using protocol::Opcode;
using protocol::WireStatus;
using server::testing::kToken;
using server::testing::kVolumeSize;

struct Listener : client::ReplicaChannel::Listener {
  std::atomic<bool> connected{false};
  std::atomic<bool> disconnected{false};
  std::atomic<int> why{0};
  protocol::ReplicaInfo info;
  void OnConnected(const protocol::ReplicaInfo& i) override {
    info = i;
    connected = true;
  }
  void OnDisconnected(const Status& w) override {
    why = static_cast<int>(w.code());
    disconnected = true;
  }
};

struct Op {
  ClientRequest req;
  std::atomic<bool> done{false};
  std::atomic<bool> done_inside_submit{false};
  static void Done(ClientRequest* r) { static_cast<Op*>(r->ctx)->done = true; }
  Op(Opcode op, uint64_t offset, uint32_t length, void* buf) {
    req.op = op;
    req.offset = offset;
    req.length = length;
    req.buf = buf;
    req.done = &Op::Done;
    req.ctx = this;
  }
};

bool WaitFor(const std::atomic<bool>& flag, int timeout_ms = 10000) {
  for (int i = 0; i < timeout_ms && !flag; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return flag;
}

class LocalChannelTest : public server::testing::ServerFixture {
 protected:
  void TearDown() override {
    if (server_ && channel_) OnLoop([&] { channel_.reset(); });
    ServerFixture::TearDown();
  }

  template <typename Fn>
  auto OnLoop(Fn fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    server_->loop()->Post([&task] { task(); });
    return result.get();
  }

  client::ClientOptions LocalOptions(uint64_t epoch = 1, const std::string& token = kToken) {
    client::ClientOptions o = Options("vol-1", epoch);
    o.token = token;
    o.target_id = 42;
    return o;
  }

  void OpenChannel(const client::ClientOptions& o) {
    Status st = OnLoop([&] {
      channel_ = std::make_unique<LocalReplicaChannel>(server_.get(), o, &listener_);
      return channel_->Connect();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
    for (int i = 0; i < 10000 && !listener_.connected && !listener_.disconnected; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_TRUE(listener_.connected || listener_.disconnected);
  }

  // Submits on the loop, then waits for `done` (never inside Submit).
  StatusCode Do(Op* op) {
    OnLoop([&] {
      channel_->Submit(&op->req);
      op->done_inside_submit = op->done.load();
    });
    EXPECT_FALSE(op->done_inside_submit) << "done ran inside Submit";
    EXPECT_TRUE(WaitFor(op->done));
    return op->req.status;
  }

  Listener listener_;
  std::unique_ptr<LocalReplicaChannel> channel_;
};

TEST_F(LocalChannelTest, WrittenBytesReadBackAlignedOrNotAndFlushSucceeds) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  EXPECT_EQ(listener_.info.size, kVolumeSize);
  EXPECT_EQ(listener_.info.replica_id, "r-vol-1");

  uint8_t* out = static_cast<uint8_t*>(server::testing::AlignedBuffer(3 * 4096));
  uint8_t* in = static_cast<uint8_t*>(server::testing::AlignedBuffer(3 * 4096));
  for (int i = 0; i < 3 * 4096; ++i) out[i] = static_cast<uint8_t>(i * 13 + 1);
  // Aligned: straight from/into the caller's buffers.
  Op w(Opcode::kWrite, 1 << 20, 8192, out);
  w.req.flags = protocol::kFlagFua;
  ASSERT_EQ(Do(&w), StatusCode::kOk);
  Op r(Opcode::kRead, 1 << 20, 8192, in);
  ASSERT_EQ(Do(&r), StatusCode::kOk);
  EXPECT_EQ(r.req.reply_length, 8192u);
  EXPECT_EQ(std::memcmp(in, out, 8192), 0);
  // Misaligned caller buffers take a bounce buffer; the bytes are the same.
  Op w2(Opcode::kWrite, 2 << 20, 4096, out + 100);
  ASSERT_EQ(Do(&w2), StatusCode::kOk);
  std::memset(in, 0, 3 * 4096);
  Op r2(Opcode::kRead, 2 << 20, 4096, in + 7);
  ASSERT_EQ(Do(&r2), StatusCode::kOk);
  EXPECT_EQ(std::memcmp(in + 7, out + 100, 4096), 0);

  Op f(Opcode::kFlush, 0, 0, nullptr);
  EXPECT_EQ(Do(&f), StatusCode::kOk);
  // Control requests answer like over TCP (GET_INFO's payload to buf).
  std::string info_buf(protocol::kMaxControlPayload, '\0');
  Op gi(Opcode::kGetInfo, 0, 0, info_buf.data());
  ASSERT_EQ(Do(&gi), StatusCode::kOk);
  protocol::ReplicaInfo decoded;
  ASSERT_TRUE(
      protocol::DecodeReplicaInfo(std::string_view(info_buf.data(), gi.req.reply_length), &decoded)
          .ok());
  EXPECT_EQ(decoded.highest_epoch, 1u);
  // Refused by the replica's rules: past the end.
  Op past(Opcode::kWrite, kVolumeSize, 4096, out);
  EXPECT_EQ(Do(&past), StatusCode::kOutOfRange);
  EXPECT_EQ(past.req.wire_status, WireStatus::kOutOfRange);
  EXPECT_EQ(OnLoop([&] { return channel_->inflight(); }), 0u);
  std::free(out);
  std::free(in);
}

TEST_F(LocalChannelTest, ANewerTargetsHelloOverTcpFencesTheLocalChannel) {
  StartServer();
  OpenChannel(LocalOptions(/*epoch=*/3));
  ASSERT_TRUE(listener_.connected);
  void* buf = server::testing::AlignedBuffer(4096);
  std::memset(buf, 0x5a, 4096);
  Op before(Opcode::kWrite, 0, 4096, buf);
  ASSERT_EQ(Do(&before), StatusCode::kOk);

  // A newer target takes the volume over through a remote session.
  server::testing::TestListener remote;
  client::ReplicaClient* c = Connect(&remote, Options("vol-1", 4));
  ASSERT_TRUE(remote.connected);

  // The local channel's next reply is STALE_EPOCH (the target fences
  // itself on it), and the channel then disconnects as a hung-up session.
  Op after(Opcode::kWrite, 4096, 4096, buf);
  EXPECT_EQ(Do(&after), StatusCode::kFailedPrecondition);
  EXPECT_EQ(after.req.wire_status, WireStatus::kStaleEpoch);
  ASSERT_TRUE(WaitFor(listener_.disconnected));
  EXPECT_EQ(listener_.why, static_cast<int>(StatusCode::kUnavailable));
  // Reopening at the old epoch is refused.
  listener_.connected = false;
  listener_.disconnected = false;
  EXPECT_TRUE(OnLoop([&] { return channel_->Connect(); }).ok());
  ASSERT_TRUE(WaitFor(listener_.disconnected));
  EXPECT_FALSE(listener_.connected);
  EXPECT_EQ(listener_.why, static_cast<int>(StatusCode::kFailedPrecondition));
  // The newer target's write is not overwritten by anything of the old one.
  EXPECT_EQ(ServerFixture::Do(c, Opcode::kRead, 4096, 4096, buf), StatusCode::kOk);
  std::free(buf);
}

TEST_F(LocalChannelTest, ABackendErrorFailsThatRequestWithIoError) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  void* buf = server::testing::AlignedBuffer(4096);
  // The disk fails a READ: the data file lost its tail (a short transfer is
  // the backend's error, as a media error would be).
  ASSERT_EQ(::truncate((dir_ + "/replicas/vol-1/data").c_str(), 1 << 20), 0);
  Op r(Opcode::kRead, 8 << 20, 4096, buf);
  EXPECT_EQ(Do(&r), StatusCode::kInternal);
  EXPECT_EQ(r.req.wire_status, WireStatus::kIoError);
  // The channel stays open: what to do with the replica is the target's
  // call (it faults it), as over TCP.
  Op again(Opcode::kRead, 0, 4096, buf);
  EXPECT_EQ(Do(&again), StatusCode::kOk);
  std::free(buf);
}

TEST_F(LocalChannelTest, CloseWaitsForTheDiskThenCancelsAndARefusedHelloDisconnects) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  void* buf = server::testing::AlignedBuffer(1 << 20);
  std::memset(buf, 3, 1 << 20);
  Op w(Opcode::kWrite, 4 << 20, 1 << 20, buf);
  uint32_t port_inflight_after_close = 1;
  OnLoop([&] {
    channel_->Submit(&w.req);
    channel_->Close();
    // `done` ran inside Close, after the disk was done with the buffer.
    EXPECT_TRUE(w.done);
    port_inflight_after_close = channel_->inflight();
  });
  EXPECT_EQ(w.req.status, StatusCode::kCancelled);
  EXPECT_EQ(port_inflight_after_close, 0u);
  EXPECT_FALSE(listener_.disconnected) << "Close() does not call the listener";
  Op late(Opcode::kRead, 0, 4096, buf);
  EXPECT_EQ(Do(&late), StatusCode::kUnavailable);

  // A wrong token: the HELLO is refused, OnDisconnected says why.
  OnLoop([&] { channel_.reset(); });
  listener_.connected = false;
  OpenChannel(LocalOptions(1, "wrong-token"));
  ASSERT_TRUE(WaitFor(listener_.disconnected));
  EXPECT_FALSE(listener_.connected);
  EXPECT_EQ(listener_.why, static_cast<int>(StatusCode::kUnauthenticated));
  std::free(buf);
}

TEST_F(LocalChannelTest, DetachingTheReplicaDisconnectsTheChannel) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  ASSERT_TRUE(server_->DetachVolume("vol-1").ok());
  ASSERT_TRUE(WaitFor(listener_.disconnected));
  EXPECT_EQ(listener_.why, static_cast<int>(StatusCode::kUnavailable));
  manager_->EndDelete("vol-1");
}

TEST_F(LocalChannelTest, TheFactoryChoosesLocalOnlyForItsOwnAddressVolumeAndLoop) {
  StartServer();
  client::ClientOptions o = LocalOptions();
  o.host = "127.0.0.1";
  o.port = server_->port();
  auto pick = [&](const client::ClientOptions& opts, EventLoop* loop) {
    return OnLoop([&] {
      return MaybeLocalChannel(server_.get(), "127.0.0.1", server_->port(), loop, opts,
                               &listener_) != nullptr;
    });
  };
  EXPECT_TRUE(pick(o, server_->loop()));
  EXPECT_FALSE(pick(o, &loop_)) << "a target on another loop uses TCP";
  client::ClientOptions other_port = o;
  other_port.port = static_cast<uint16_t>(o.port + 1);
  EXPECT_FALSE(pick(other_port, server_->loop()));
  client::ClientOptions other_host = o;
  other_host.host = "127.0.0.2";
  EXPECT_FALSE(pick(other_host, server_->loop()));
  client::ClientOptions unknown = o;
  unknown.volume_id = "not-here";
  EXPECT_FALSE(pick(unknown, server_->loop()));
}

// The target's channel to its own replica over a backend whose metadata
// persists (FUA writes) a test can hold in flight.
class LocalChannelGatedTest : public LocalChannelTest {
 protected:
  void SetUp() override {
    LocalChannelTest::SetUp();
    if (HasFatalFailure()) return;
    // The same replicas, on a gate in front of the real backend.
    ASSERT_TRUE(manager_->CloseAll().ok());
    manager_.reset();
    auto gate = std::make_unique<server::testing::GateBackend>(std::move(backend_), Holds());
    gate_ = gate.get();
    backend_ = std::move(gate);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
  }
  void TearDown() override {
    if (gate_ != nullptr) gate_->Open();
    LocalChannelTest::TearDown();
  }
  virtual server::testing::GateBackend::Holds Holds() const {
    return server::testing::GateBackend::Holds::kFuaWrites;
  }
  bool WaitHeld() {
    for (int i = 0; i < 10000 && gate_->held() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return gate_->held() > 0;
  }
  bool MetadataBusy() {
    return OnLoop([&] { return (*manager_->Get("vol-1"))->persist_in_flight(); });
  }
  server::testing::GateBackend* gate_ = nullptr;
};

TEST_F(LocalChannelGatedTest, SetGenerationWaitsForAMetadataPersistInOrderInsteadOfFailing) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  void* buf = server::testing::AlignedBuffer(4096);
  std::memset(buf, 7, 4096);
  // A write to a fresh activity extent: its bit is persisted first, and the
  // gate keeps that persist in flight.
  gate_->Close();
  Op w(Opcode::kWrite, 8 << 20, 4096, buf);
  OnLoop([&] { channel_->Submit(&w.req); });
  for (int i = 0; i < 10000 && gate_->held() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_GT(gate_->held(), 0u);
  ASSERT_TRUE(MetadataBusy());
  const uint64_t gen = OnLoop([&] { return (*manager_->Get("vol-1"))->metadata().generation; });

  // Meanwhile the target bumps the generation, then reads: over TCP the
  // session holds both until the persist is done; so must the channel (the
  // replica refuses a metadata write now: IO_ERROR, the local replica faulted).
  std::atomic<int> order{0};
  struct Seq : Op {
    std::atomic<int>* order;
    int at = 0;
    Seq(Opcode op, uint64_t off, uint32_t len, void* b, std::atomic<int>* o)
        : Op(op, off, len, b), order(o) {
      req.done = [](ClientRequest* r) {
        Seq* s = static_cast<Seq*>(static_cast<Op*>(r->ctx));
        s->at = ++*s->order;
        s->done = true;
      };
    }
  };
  Seq set_gen(Opcode::kSetGeneration, gen + 1, 0, nullptr, &order);
  void* rbuf = server::testing::AlignedBuffer(4096);
  Seq read(Opcode::kRead, 0, 4096, rbuf, &order);
  OnLoop([&] {
    channel_->Submit(&set_gen.req);
    channel_->Submit(&read.req);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(set_gen.done) << "answered while the metadata persist was in flight: "
                             << static_cast<int>(set_gen.req.status);
  EXPECT_FALSE(read.done) << "a later request overtook the waiting SET_GENERATION";

  gate_->Open();
  ASSERT_TRUE(WaitFor(w.done));
  ASSERT_TRUE(WaitFor(set_gen.done));
  ASSERT_TRUE(WaitFor(read.done));
  EXPECT_EQ(w.req.status, StatusCode::kOk);
  EXPECT_EQ(set_gen.req.status, StatusCode::kOk);
  EXPECT_EQ(read.req.status, StatusCode::kOk);
  EXPECT_LT(set_gen.at, read.at);
  EXPECT_EQ(OnLoop([&] { return (*manager_->Get("vol-1"))->metadata().generation; }), gen + 1);
  EXPECT_FALSE(listener_.disconnected);
  std::free(buf);
  std::free(rbuf);
}

// Close() with a write parked for its activity bit's persist: cancelled as a
// closed port's request, not logged and counted as a failed WRITE.
TEST_F(LocalChannelGatedTest, CloseCancelsAParkedWriteWithoutReportingAFailedWrite) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  void* buf = server::testing::AlignedBuffer(4096);
  std::memset(buf, 7, 4096);
  gate_->Close();
  Op w(Opcode::kWrite, 8 << 20, 4096, buf);
  OnLoop([&] { channel_->Submit(&w.req); });
  ASSERT_TRUE(WaitHeld());
  const uint64_t requests = server_->GetStats().requests;
  {
    server::testing::CaptureStderr log(dir_ + "/close.log");
    OnLoop([&] { channel_->Close(); });
    log.Restore();
    EXPECT_EQ(log.Count("failed"), 0) << "a cancelled parked write was logged as failed";
  }
  EXPECT_TRUE(w.done);
  EXPECT_EQ(w.req.status, StatusCode::kCancelled);
  EXPECT_EQ(server_->GetStats().requests, requests);
  gate_->Open();
  std::free(buf);
}

// A parked write (its activity bit's persist held) failed by the port itself
// when DetachVolume closes it: that happens inside the server's loop over its
// dirty waiters, and a callback closing the channel there destroyed the port
// that loop still used (ASan: heap-use-after-free). Its `done` runs from the
// channel's BeforeWait instead.
TEST_F(LocalChannelGatedTest, AParkedWriteFailedByTheServerIsAnsweredOutsideItsLoops) {
  StartServer();
  OpenChannel(LocalOptions());
  ASSERT_TRUE(listener_.connected);
  void* buf = server::testing::AlignedBuffer(4096);
  std::memset(buf, 7, 4096);
  gate_->Close();
  struct CloseOnDone : Op {
    LocalReplicaChannel* ch;
    CloseOnDone(void* b, LocalReplicaChannel* c) : Op(Opcode::kWrite, 8 << 20, 4096, b), ch(c) {
      req.done = [](ClientRequest* r) {
        auto* self = static_cast<CloseOnDone*>(static_cast<Op*>(r->ctx));
        self->ch->Close();
        self->done = true;
      };
    }
  };
  CloseOnDone w(buf, channel_.get());
  OnLoop([&] { channel_->Submit(&w.req); });
  ASSERT_TRUE(WaitHeld());
  auto detached = std::async(std::launch::async, [&] { return server_->DetachVolume("vol-1"); });
  ASSERT_TRUE(WaitFor(w.done));
  EXPECT_NE(w.req.status, StatusCode::kOk);
  gate_->Open();
  ASSERT_EQ(detached.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(detached.get().ok());
  manager_->EndDelete("vol-1");
  std::free(buf);
}

}  // namespace
}  // namespace tandem::local

namespace tandem::local {
namespace {

// The gate holds data writes: the disk "keeps" a request's buffer. Each
// scenario exits (test failure) when it survives; the tests expect it to
// abort.
class LocalChannelDiskHoldsTest : public LocalChannelGatedTest {
 protected:
  server::testing::GateBackend::Holds Holds() const override {
    return server::testing::GateBackend::Holds::kDataWrites;
  }

  void CloseWhileTheDiskHoldsAWrite() {
    StartServer();
    OpenChannel(LocalOptions());
    void* buf = server::testing::AlignedBuffer(4096);
    gate_->Close();
    Op w(Opcode::kWrite, 0, 4096, buf);
    OnLoop([&] {
      channel_->set_drain_timeout_ms(100);
      channel_->Submit(&w.req);
    });
    if (!WaitHeld()) std::exit(0);  // not held: no abort, the test fails
    OnLoop([&] { channel_->Close(); });
    std::exit(0);  // survived: the held write was handed back CANCELLED
  }

  void CloseInsideACompletionWhileTheDiskHoldsAWrite() {
    StartServer();
    OpenChannel(LocalOptions());
    void* buf = server::testing::AlignedBuffer(2 * 4096);
    gate_->Close();
    Op w(Opcode::kWrite, 0, 4096, buf);
    OnLoop([&] { channel_->Submit(&w.req); });
    if (!WaitHeld()) std::exit(0);
    // A read completes while the write is on the disk; its callback closes
    // the channel (the target must not: it closes channels outside their
    // callbacks).
    struct CloseOnDone : Op {
      LocalReplicaChannel* ch;
      CloseOnDone(void* b, LocalReplicaChannel* c) : Op(Opcode::kRead, 0, 4096, b), ch(c) {
        req.done = [](ClientRequest* r) {
          auto* self = static_cast<CloseOnDone*>(static_cast<Op*>(r->ctx));
          self->ch->Close();
          self->done = true;
        };
      }
    };
    CloseOnDone r(static_cast<char*>(buf) + 4096, channel_.get());
    OnLoop([&] { channel_->Submit(&r.req); });
    WaitFor(r.done);
    std::exit(0);  // survived
  }
};

// Closing the channel must never hand a buffer back while the disk may still
// read or write it (a late O_DIRECT READ into a reused NBD buffer is silent
// corruption): when the disk does not finish in time, the process aborts.
TEST_F(LocalChannelDiskHoldsTest, CloseAbortsRatherThanCompleteARequestTheDiskStillHolds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(CloseWhileTheDiskHoldsAWrite(), ::testing::KilledBySignal(SIGABRT),
              "still in flight at close");
}

TEST_F(LocalChannelDiskHoldsTest, CloseInsideACompletionWithIoOnTheDiskAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(CloseInsideACompletionWhileTheDiskHoldsAWrite(), ::testing::KilledBySignal(SIGABRT),
              "inside a completion");
}

}  // namespace
}  // namespace tandem::local

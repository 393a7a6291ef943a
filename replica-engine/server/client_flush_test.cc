// A request handed to a ReplicaClient after its BeforeWait ran in the same
// loop iteration (issue 10) — by an idler registered after it, such as the
// volume target's or the NBD server's — is on the wire before that
// iteration's wait, not one wakeup (up to a ticker period) later.

#include <cstring>

#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

using protocol::Opcode;

// Submits one request from its BeforeWait when armed.
struct LateIdler : EventLoop::Idler {
  client::ReplicaClient* client = nullptr;
  client::ClientRequest* req = nullptr;
  void BeforeWait() override {
    if (req == nullptr) return;
    client->Submit(req);
    req = nullptr;
  }
};

class ClientFlushTest : public ServerFixture {};

TEST_F(ClientFlushTest, RequestSubmittedByALaterIdlerIsSentInTheSameIteration) {
  StartServer();
  TestListener l;
  client::ReplicaClient* c = Connect(&l, Options("vol-1"));
  ASSERT_TRUE(l.connected);
  LateIdler late;  // registered after the client: runs after its BeforeWait
  late.client = c;
  loop_.AddIdler(&late);

  void* buf = AlignedBuffer(4096);
  int delayed = 0;
  for (int i = 0; i < 20; ++i) {
    TestOp op(Opcode::kRead, 4096 * uint64_t(i), 4096, buf);
    late.req = &op.req;
    const uint64_t sent = c->stats().bytes_sent;
    // One iteration that does not wait: the idlers run, then the loop would
    // sleep. The READ (a 48-byte header) must have left by then.
    loop_.RunOnce(0);
    if (c->stats().bytes_sent != sent + protocol::kHeaderSize) ++delayed;
    ASSERT_TRUE(RunUntil([&] { return op.done; }));
    EXPECT_EQ(op.req.status, StatusCode::kOk);
  }
  EXPECT_EQ(delayed, 0) << "requests left waiting for the next wakeup";
  EXPECT_EQ(c->stats().late_submits_sent, 20u);

  // Handed over from a handler (before BeforeWait), requests still wait for
  // the batch of the iteration.
  TestOp op(Opcode::kRead, 0, 4096, buf);
  c->Submit(&op.req);
  ASSERT_TRUE(RunUntil([&] { return op.done; }));
  EXPECT_EQ(c->stats().late_submits_sent, 20u);
  loop_.RemoveIdler(&late);
  std::free(buf);
}

}  // namespace
}  // namespace tandem::server::testing

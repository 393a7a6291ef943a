// TargetOptions::channel_factory: the target opens each replica through the
// factory (what the engine uses to serve its own replica in-process), hands
// it the replica's address and the HELLO's fields, and falls back to TCP when
// the factory returns null. Real replica servers on 127.0.0.1.

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/volume/volume_target.h"
#include "tests/support/testing_cluster.h"

namespace tandem::target {
namespace {

using namespace target_testing;  // NOLINT
using ChannelFactoryTest = TargetFixture;

// A channel that forwards to a ReplicaClient and counts what passes.
class CountingChannel final : public client::ReplicaChannel {
 public:
  CountingChannel(EventLoop* loop, const client::ClientOptions& o, Listener* listener)
      : inner_(loop, o, listener) {}
  Status Connect() override {
    ++connects;
    return inner_.Connect();
  }
  void Submit(client::ClientRequest* req) override {
    ++submits;
    inner_.Submit(req);
  }
  void Close() override { inner_.Close(); }
  client::ClientState state() const override { return inner_.state(); }
  const protocol::ReplicaInfo& info() const override { return inner_.info(); }
  uint32_t inflight() const override { return inner_.inflight(); }

  int connects = 0;
  int submits = 0;

 private:
  client::ReplicaClient inner_;
};

TEST_F(ChannelFactoryTest, FactoryOpensItsReplicasAndNullMeansTcp) {
  AddNodes(3);
  std::vector<client::ClientOptions> asked;
  CountingChannel* counted = nullptr;
  TargetOptions o = Options(1);
  const uint16_t mine = nodes_[0]->port;
  o.channel_factory =
      [&](EventLoop* loop, const client::ClientOptions& co,
          client::ReplicaChannel::Listener* listener) -> std::unique_ptr<client::ReplicaChannel> {
    EXPECT_EQ(loop, &loop_);
    asked.push_back(co);
    if (co.port != mine) return nullptr;  // the others over TCP
    auto ch = std::make_unique<CountingChannel>(loop, co, listener);
    counted = ch.get();
    return ch;
  };
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(t->state(), TargetState::kReady);
  ASSERT_EQ(asked.size(), 3u);
  for (size_t i = 0; i < asked.size(); ++i) {
    EXPECT_EQ(asked[i].host, "127.0.0.1");
    EXPECT_EQ(asked[i].port, nodes_[i]->port);
    EXPECT_EQ(asked[i].volume_id, kVolume);
    EXPECT_EQ(asked[i].token, kToken);
    EXPECT_EQ(asked[i].epoch, 1u);
    EXPECT_NE(asked[i].target_id, 0u);
  }
  ASSERT_NE(counted, nullptr);
  EXPECT_EQ(counted->connects, 1);
  const int before = counted->submits;

  ASSERT_EQ(WritePattern(t, 8192, 4096, 0x5a), StatusCode::kOk);
  EXPECT_GT(counted->submits, before);  // the write went through the channel
  for (auto& n : nodes_) {
    std::vector<uint8_t> d = n->Data();
    EXPECT_EQ(d[8192], 0x5a);
    EXPECT_EQ(d[8192 + 4095], 0x5a);
  }
  uint8_t* back = Buf(4096);
  ASSERT_EQ(Do(t, BlockOp::kRead, 8192, 4096, back), StatusCode::kOk);
  EXPECT_EQ(back[0], 0x5a);
}

}  // namespace
}  // namespace tandem::target

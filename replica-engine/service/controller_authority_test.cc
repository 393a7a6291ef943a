// ControllerAuthority against a real gRPC Membership service on 127.0.0.1:
// each answer runs on the reply loop of the authority that was asked, also
// for an authority sharing another's connection (one per target loop,
// tandem-engine --target-threads), with the controller's status; an answer
// arriving after its authority is gone is dropped.

#include "replica-engine/service/controller_authority.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "common/event_loop.h"
#include "common/grpc/grpc_server.h"

namespace tandem::service {
namespace {

namespace pb = ::tandem::controller::v1;

// Shrinks are recorded, grows refused as a newer epoch's (FAILED_PRECONDITION);
// a volume named "slow" is answered after 300 ms.
class FakeMembership final : public pb::Membership::Service {
 public:
  grpc::Status ShrinkInSync(grpc::ServerContext*, const pb::InSyncRequest* req,
                            pb::InSyncResponse*) override {
    if (req->volume_id() == "slow") std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ++shrinks;
    return grpc::Status::OK;
  }
  grpc::Status GrowInSync(grpc::ServerContext*, const pb::InSyncRequest*,
                          pb::InSyncResponse*) override {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "a newer epoch owns it");
  }
  std::atomic<int> shrinks{0};
};

// An event loop on a thread of its own, and that thread's id.
struct LoopThread {
  EventLoop loop;
  std::thread thread{[this] { loop.Run(); }};
  std::thread::id id = thread.get_id();
  ~LoopThread() {
    loop.Stop();
    thread.join();
  }
};

struct Answer {
  Status status;
  std::thread::id thread;
};

// Asks `a` (shrink or grow) and waits for the answer.
Answer Ask(ControllerAuthority* a, bool shrink, const std::string& volume = "v") {
  target::InSyncUpdate u;
  u.volume_id = volume;
  u.epoch = 1;
  u.generation = 2;
  auto p = std::make_shared<std::promise<Answer>>();
  std::future<Answer> f = p->get_future();
  auto done = [p](Status st) { p->set_value(Answer{st, std::this_thread::get_id()}); };
  if (shrink) {
    a->ShrinkInSync(u, done);
  } else {
    a->GrowInSync(u, done);
  }
  EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  return f.get();
}

class ControllerAuthorityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto started = rpc::GrpcServer::Start("127.0.0.1:0", &service_);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(*started);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }
  void TearDown() override { server_->Shutdown(std::chrono::milliseconds(1000)); }

  FakeMembership service_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::string address_;
};

TEST_F(ControllerAuthorityTest, EachAuthorityAnswersOnItsOwnLoop) {
  LoopThread l0, l1;
  ControllerAuthority a0(address_, "", &l0.loop);
  ControllerAuthority a1(a0, &l1.loop);  // the same connection, another loop
  Answer s0 = Ask(&a0, /*shrink=*/true);
  EXPECT_TRUE(s0.status.ok()) << s0.status.ToString();
  EXPECT_EQ(s0.thread, l0.id);
  Answer s1 = Ask(&a1, /*shrink=*/true);
  EXPECT_TRUE(s1.status.ok()) << s1.status.ToString();
  EXPECT_EQ(s1.thread, l1.id);
  EXPECT_EQ(service_.shrinks.load(), 2);
  Answer g1 = Ask(&a1, /*shrink=*/false);
  EXPECT_EQ(g1.status.code(), StatusCode::kFailedPrecondition) << g1.status.ToString();
  EXPECT_EQ(g1.thread, l1.id);
  Answer g0 = Ask(&a0, /*shrink=*/false);
  EXPECT_EQ(g0.thread, l0.id);
}

TEST_F(ControllerAuthorityTest, AnAnswerAfterItsAuthorityIsGoneIsDropped) {
  LoopThread l0, l1;
  ControllerAuthority a0(address_, "", &l0.loop);
  std::atomic<bool> answered{false};
  {
    ControllerAuthority a1(a0, &l1.loop);
    target::InSyncUpdate u;
    u.volume_id = "slow";
    a1.ShrinkInSync(u, [&](Status) { answered = true; });
  }  // a1 goes while the controller still works on its call
  // a0 still answers, on its loop (the shared connection outlives a1).
  Answer s0 = Ask(&a0, /*shrink=*/true);
  EXPECT_TRUE(s0.status.ok()) << s0.status.ToString();
  EXPECT_EQ(s0.thread, l0.id);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (service_.shrinks.load() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(service_.shrinks.load(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the late answer's chance to run
  EXPECT_FALSE(answered.load());
}

}  // namespace
}  // namespace tandem::service

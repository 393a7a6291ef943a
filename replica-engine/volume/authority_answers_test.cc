// The membership authority's answers that do not say what happened
// (docs/architecture.md "Who may acknowledge"): a call whose answer is lost
// (a deadline, the controller going away, ABORTED) may have been recorded, so
// the target treats the record as existing and moves or clears it before its
// generation moves. Real replica servers on 127.0.0.1; the authority is a
// fake that applies every call and loses the answers of some.

#include <string>
#include <vector>

#include "tests/support/testing_cluster.h"

namespace tandem::target {
namespace {

using namespace target_testing;  // NOLINT

// Applies every call to the record it keeps (as the controller would), then
// answers a shrink with `shrink_answer` and a grow or clear with OK.
class ApplyingAuthority final : public MembershipAuthority {
 public:
  struct Call {
    bool shrink;
    InSyncUpdate update;
  };
  explicit ApplyingAuthority(EventLoop* loop) : loop_(loop) {}
  void ShrinkInSync(const InSyncUpdate& u, std::function<void(Status)> done) override {
    Apply(true, u, std::move(done), shrink_answer);
  }
  void GrowInSync(const InSyncUpdate& u, std::function<void(Status)> done) override {
    Apply(false, u, std::move(done), Status::Ok());
  }
  Status shrink_answer = Status::DeadlineExceeded("the answer was lost");
  std::vector<Call> calls;
  uint64_t record_id = 0;  // what the authority holds now (0: no record)
  std::vector<std::string> record_replicas;

 private:
  void Apply(bool shrink, const InSyncUpdate& u, std::function<void(Status)> done, Status answer) {
    calls.push_back({shrink, u});
    record_id = u.generation_id;
    record_replicas = u.replica_ids;
    loop_->Post([done = std::move(done), answer] { done(answer); });
  }
  EventLoop* loop_;
};

using AuthorityAnswersTest = TargetFixture;

// Issue 17: r1 and r2 fail; the shrink to {r0} at the next id is recorded but
// its answer lost, so writes wait. r1 comes back and is rebuilt: a majority
// again. The bump that follows uses the very id the lost shrink recorded, so
// the record {r0}@id must be cleared first; else it outlives the bump and
// later vouches for r0 alone after r0 missed writes.
TEST_F(AuthorityAnswersTest, ALostShrinkAnswerIsClearedBeforeTheNextBump) {
  AddNodes(3);
  ApplyingAuthority authority(&loop_);
  TargetOptions o = Options(5, 2000, /*reconnect_ms=*/100);
  o.quorum_wait_ms = 300;
  o.authority = &authority;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x51), StatusCode::kOk);
  nodes_[1]->server->Stop();
  nodes_[2]->server->Stop();
  EXPECT_EQ(WritePattern(t, 4096, 4096, 0x52), StatusCode::kUnavailable);
  ASSERT_FALSE(authority.calls.empty());
  ASSERT_TRUE(authority.calls.back().shrink);
  ASSERT_NE(authority.record_id, 0u);
  nodes_[1]->StartServer();
  ASSERT_TRUE(RunUntil([&] { return WritePattern(t, 8192, 4096, 0x53) == StatusCode::kOk; }, 20000))
      << t->GetStatus().last_error;
  EXPECT_EQ(authority.record_id, 0u) << "a record of a lost shrink outlived the bump";
  EXPECT_TRUE(authority.record_replicas.empty());
  ASSERT_FALSE(authority.calls.back().shrink);
  // Every call carries a higher seq than the one before (the controller
  // refuses a late, older one).
  for (size_t i = 1; i < authority.calls.size(); ++i) {
    EXPECT_GT(authority.calls[i].update.seq, authority.calls[i - 1].update.seq) << "call " << i;
  }
}

// A restage under one publish starts a new target at the same epoch: its
// calls must still come after the last one's, or the authority would refuse
// them as superseded.
TEST_F(AuthorityAnswersTest, ANewTargetsCallsComeAfterThoseOfTheTargetBefore) {
  AddNodes(2);
  ApplyingAuthority authority(&loop_);
  authority.shrink_answer = Status::Ok();
  TargetOptions o = Options(3);
  o.authority = &authority;
  o.target_id = 0x5EED;  // the same owner, as TargetManager gives a restage
  VolumeTarget* t1 = StartTarget(o);
  nodes_[1]->server->Stop();
  ASSERT_EQ(WritePattern(t1, 0, 4096, 0x71), StatusCode::kOk);  // shrunk to r0
  ASSERT_FALSE(authority.calls.empty());
  const uint64_t last = authority.calls.back().update.seq;
  targets_.clear();
  o.in_sync.generation_id = authority.record_id;
  o.in_sync.replica_ids = authority.record_replicas;
  VolumeTarget* t2 = StartTarget(o);
  ASSERT_EQ(WritePattern(t2, 4096, 4096, 0x72), StatusCode::kOk) << t2->GetStatus().last_error;
  ASSERT_GT(authority.calls.size(), 1u);
  EXPECT_GT(authority.calls.back().update.seq, last);
}

}  // namespace
}  // namespace tandem::target

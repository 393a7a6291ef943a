// EtcdStore against a 3-member etcd cluster: losing the member it talks to,
// or the raft leader, costs some UNAVAILABLE answers and no data, and the
// controller election keeps working.

#include <thread>

#include "controller/store/store_test_util.h"

namespace tandem::store {
namespace {

using namespace std::chrono_literals;
using testing::EtcdCluster;

// Retries `op` (bounded) while it answers UNAVAILABLE.
template <typename F>
auto RetryUnavailable(F op) -> decltype(op()) {
  auto r = op();
  for (int i = 0; i < 100 && !r.ok() && r.status().code() == StatusCode::kUnavailable; ++i) {
    std::this_thread::sleep_for(100ms);
    r = op();
  }
  return r;
}

TEST(EtcdStoreClusterTest, SurvivesLosingTheMemberItTalksToAndKeepsEveryWrite) {
  if (!testing::EtcdAvailable()) GTEST_SKIP() << "no etcd binary";
  auto cluster = EtcdCluster::Start(3);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  StoreOptions options;
  options.candidate_id = "a";
  // Long enough to outlast a raft election after killing member 0 (it may be
  // the raft leader) plus the reconnect, on a loaded 2-vCPU machine.
  options.lease_ttl = 8s;
  options.request_timeout = 1s;
  auto store = OpenStore((*cluster)->uri(), options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (int i = 0; i < 10; ++i) {
    auto r = (*store)->Put("/k/" + std::to_string(i), "before");
    ASSERT_TRUE(r.ok() && r->succeeded) << r.status().ToString();
  }
  ASSERT_OK((*store)->Campaign(10s));

  // pick_first talks to the first endpoint: kill it.
  (*cluster)->member(0).Kill();
  for (int i = 10; i < 20; ++i) {
    auto r = RetryUnavailable([&] { return (*store)->Put("/k/" + std::to_string(i), "after"); });
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->succeeded);
  }
  auto all = RetryUnavailable([&] { return (*store)->Range("/k/", "", 0); });
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->kvs.size(), 20u);

  // The lease is renewed through a surviving member: still the leader, and
  // a fenced write goes through.
  auto fenced = RetryUnavailable([&] {
    return (*store)->Txn({.compares = {}, .ops = {Op::Put("/led", "a")}, .require_leader = true});
  });
  ASSERT_TRUE(fenced.ok()) << fenced.status().ToString();
  EXPECT_TRUE(fenced->succeeded);
  EXPECT_TRUE((*store)->IsLeader());

  // A second member lost: no quorum. Everything is UNAVAILABLE, and the
  // leader stops leading within the TTL (its lease cannot be renewed).
  (*cluster)->member(1).Kill();
  EXPECT_EQ((*store)->Put("/k/x", "v").status().code(), StatusCode::kUnavailable);
  const auto lost_at = std::chrono::steady_clock::now();
  while ((*store)->IsLeader() &&
         std::chrono::steady_clock::now() - lost_at < options.lease_ttl + 5s) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_FALSE((*store)->IsLeader());

  // Quorum back: the data is all there.
  ASSERT_OK((*cluster)->member(1).Restart());
  auto again = RetryUnavailable([&] { return (*store)->Range("/k/", "", 0); });
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->kvs.size(), 20u);
}

}  // namespace
}  // namespace tandem::store

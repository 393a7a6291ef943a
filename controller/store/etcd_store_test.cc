// etcd-specific behaviour of EtcdStore (the shared semantics are in the
// conformance suite).

#include <grpcpp/grpcpp.h>

#include <thread>

#include "controller/store/proto/etcd/rpc.grpc.pb.h"
#include "controller/store/store_test_util.h"

namespace tandem::store {
namespace {

using namespace std::chrono_literals;
using testing::EtcdProcess;

// A raw Range at an old revision: OK while etcd still has it, OUT_OF_RANGE
// ("required revision has been compacted") once compacted.
grpc::StatusCode ReadAtRevision(const std::string& endpoint, int64_t revision) {
  auto stub =
      etcdserverpb::KV::NewStub(grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  etcdserverpb::RangeRequest req;
  req.set_key("/h");
  req.set_revision(revision);
  etcdserverpb::RangeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  return stub->Range(&ctx, req, &resp).error_code();
}

TEST(EtcdStoreTest, LeaderCompactsHistoryKeepingTheNewestRevisions) {
  auto etcd = EtcdProcess::Start();
  if (!etcd.ok() && etcd.status().code() == StatusCode::kNotFound) GTEST_SKIP();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  StoreOptions options;
  options.lease_ttl = 2s;
  options.compact_interval = 1s;
  options.compact_keep_revisions = 5;
  auto follower = OpenStore((*etcd)->uri(), options);
  ASSERT_TRUE(follower.ok()) << follower.status().ToString();
  int64_t first = 0, last = 0;
  for (int i = 0; i < 30; ++i) {
    auto r = (*follower)->Put("/h", std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (i == 0) first = r->revision;
    last = r->revision;
  }
  // Only the leader compacts; here `other` leads.
  auto other = OpenStore((*etcd)->uri(), options);
  ASSERT_TRUE(other.ok());
  ASSERT_OK((*other)->Campaign(5s));
  EXPECT_EQ((*follower)->Campaign(300ms).code(), StatusCode::kDeadlineExceeded);
  // The leader compacts within a few intervals (bounded wait).
  grpc::StatusCode code = grpc::StatusCode::OK;
  for (int i = 0; i < 100 && code == grpc::StatusCode::OK; ++i) {
    std::this_thread::sleep_for(100ms);
    code = ReadAtRevision((*etcd)->endpoint(), first);
  }
  EXPECT_EQ(code, grpc::StatusCode::OUT_OF_RANGE);
  // The newest revisions are kept (keep = 5), and the current value is intact.
  EXPECT_EQ(ReadAtRevision((*etcd)->endpoint(), last - 2), grpc::StatusCode::OK);
  auto now = (*follower)->Get("/h");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ((*now)->value, "29");
}

}  // namespace
}  // namespace tandem::store

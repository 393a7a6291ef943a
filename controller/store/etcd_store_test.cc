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

class EtcdTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::EtcdAvailable()) GTEST_SKIP() << "no etcd binary";
    Status certs = testing::MakeTestCertificates(dir_.path());
    if (certs.code() == StatusCode::kNotFound) GTEST_SKIP() << certs.ToString();
    ASSERT_OK(certs);
    testing::EtcdOptions options;
    options.tls = {.cert_file = Path("server.pem"),
                   .key_file = Path("server-key.pem"),
                   .client_ca_file = Path("ca.pem")};
    auto etcd = EtcdProcess::Start(options);
    ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
    etcd_ = std::move(etcd).value();
  }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }
  StoreOptions Tls(const std::string& ca, bool client_cert) const {
    StoreOptions o;
    o.request_timeout = 2s;
    o.tls_ca_file = ca.empty() ? "" : Path(ca);
    if (client_cert) {
      o.tls_cert_file = Path("client.pem");
      o.tls_key_file = Path("client-key.pem");
    }
    return o;
  }

  TempDir dir_;
  std::unique_ptr<EtcdProcess> etcd_;
};

TEST_F(EtcdTlsTest, MutualTlsStoreWorks) {
  auto store = OpenStore(etcd_->uri(), Tls("ca.pem", true));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto put = (*store)->Put("/tls", "yes");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ((*(*store)->Get("/tls"))->value, "yes");
  ASSERT_OK((*store)->Campaign(5s));
  auto fenced =
      (*store)->Txn({.compares = {}, .ops = {Op::Put("/tls", "led")}, .require_leader = true});
  ASSERT_TRUE(fenced.ok() && fenced->succeeded) << fenced.status().ToString();
}

TEST_F(EtcdTlsTest, ConnectionsEtcdMustRefuseAreUnavailable) {
  // No client certificate, while etcd requires one.
  EXPECT_EQ(OpenStore(etcd_->uri(), Tls("ca.pem", false)).status().code(),
            StatusCode::kUnavailable);
  // A CA that did not sign etcd's certificate.
  EXPECT_EQ(OpenStore(etcd_->uri(), Tls("other-ca.pem", true)).status().code(),
            StatusCode::kUnavailable);
  // Plain text to a TLS port.
  EXPECT_EQ(OpenStore(etcd_->uri(), Tls("", false)).status().code(), StatusCode::kUnavailable);
}

TEST_F(EtcdTlsTest, InconsistentTlsOptionsAreInvalidArgument) {
  StoreOptions cert_without_key = Tls("ca.pem", true);
  cert_without_key.tls_key_file.clear();
  EXPECT_EQ(OpenStore(etcd_->uri(), cert_without_key).status().code(),
            StatusCode::kInvalidArgument);
  StoreOptions cert_without_ca = Tls("", true);
  EXPECT_EQ(OpenStore(etcd_->uri(), cert_without_ca).status().code(), StatusCode::kInvalidArgument);
  StoreOptions missing = Tls("no-such-ca.pem", false);
  EXPECT_EQ(OpenStore(etcd_->uri(), missing).status().code(), StatusCode::kInvalidArgument);
  StoreOptions not_pem = Tls("server.ext", false);
  EXPECT_EQ(OpenStore(etcd_->uri(), not_pem).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::store

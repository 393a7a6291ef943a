// TLS and mutual TLS between a real GrpcServer and real clients over
// 127.0.0.1, with certificates made by the openssl CLI for each run.

#include "common/grpc/tls.h"

#include <grpcpp/client_context.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>

#include "common/grpc/bearer_auth.h"
#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_server.h"
#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "common/grpc/testdata/echo.grpc.pb.h"
#include "common/grpc/testing_certs.h"

namespace tandem::rpc {
namespace {

namespace pb = ::tandem::rpc::test;

class CountingEcho final : public pb::Echo::Service {
 public:
  grpc::Status Call(grpc::ServerContext* ctx, const pb::EchoRequest* req,
                    pb::EchoReply* resp) override {
    return ServeCall("Call", auth_, *ctx, [&]() -> grpc::Status {
      calls.fetch_add(1);
      resp->set_name(req->name());
      return grpc::Status::OK;
    });
  }
  std::atomic<int> calls{0};

 private:
  BearerTokenAuth auth_;
};

// The certificates are made once per test binary run (testing_certs.h).
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = new test_certs::TestCertificates(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }
  void SetUp() override {
    if (!certs_->ok()) GTEST_SKIP() << certs_->error();
  }

  static std::string F(const std::string& name) { return certs_->File(name); }
  static TlsConfig Server(bool mutual) { return certs_->Server(mutual); }

  // Starts a server with `tls` on 127.0.0.1:0; returns its endpoint.
  std::string Start(const TlsConfig& tls) {
    GrpcServerOptions options;
    options.endpoint = "127.0.0.1:0";
    options.services = {&service_};
    options.tls = tls;
    auto server = GrpcServer::Start(options);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return "";
    server_ = std::move(*server);
    return "tcp://127.0.0.1:" + std::to_string(server_->port());
  }

  // One call with a short deadline (a refused handshake is retried until it).
  Status Call(const std::string& endpoint, const TlsConfig& tls) {
    auto channel = NewClientChannel(endpoint, tls);
    if (!channel.ok()) return channel.status();
    auto stub = pb::Echo::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pb::EchoRequest req;
    req.set_name("over-tls");
    pb::EchoReply reply;
    Status st = FromGrpcStatus(stub->Call(&ctx, req, &reply));
    if (st.ok()) {
      EXPECT_EQ(reply.name(), "over-tls");
    }
    return st;
  }

  static test_certs::TestCertificates* certs_;
  CountingEcho service_;
  std::unique_ptr<GrpcServer> server_;
};
test_certs::TestCertificates* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, MutualTlsServesOnlyClientsWithACertificateFromItsCa) {
  const std::string endpoint = Start(Server(/*mutual=*/true));
  ASSERT_FALSE(endpoint.empty());
  EXPECT_TRUE(Call(endpoint, {F("client.crt"), F("client.key"), F("ca.crt")}).ok());
  EXPECT_EQ(service_.calls.load(), 1);
  // No client certificate, one from another CA, or no TLS at all: the
  // handshake fails, no handler runs.
  EXPECT_FALSE(Call(endpoint, {"", "", F("ca.crt")}).ok());
  EXPECT_FALSE(Call(endpoint, {F("stranger.crt"), F("stranger.key"), F("ca.crt")}).ok());
  EXPECT_FALSE(Call(endpoint, TlsConfig{}).ok());
  EXPECT_EQ(service_.calls.load(), 1);
}

TEST_F(TlsTest, ClientsRefuseAServerTheirCaDidNotSign) {
  const std::string endpoint = Start(Server(/*mutual=*/false));
  ASSERT_FALSE(endpoint.empty());
  EXPECT_TRUE(Call(endpoint, {"", "", F("ca.crt")}).ok());  // server-only TLS
  EXPECT_FALSE(Call(endpoint, {"", "", F("other.crt")}).ok());
  EXPECT_EQ(service_.calls.load(), 1);
}

TEST_F(TlsTest, UnusableConfigurationsAreInvalidArgumentNamingTheFile) {
  auto only_cert = GrpcServer::Start(GrpcServerOptions{
      .endpoint = "127.0.0.1:0", .services = {&service_}, .tls = {F("server.crt"), "", ""}});
  EXPECT_EQ(only_cert.status().code(), StatusCode::kInvalidArgument);
  auto ca_only = GrpcServer::Start(GrpcServerOptions{
      .endpoint = "127.0.0.1:0", .services = {&service_}, .tls = {"", "", F("ca.crt")}});
  EXPECT_EQ(ca_only.status().code(), StatusCode::kInvalidArgument);
  auto missing = GrpcServer::Start(GrpcServerOptions{.endpoint = "127.0.0.1:0",
                                                     .services = {&service_},
                                                     .tls = {F("server.crt"), F("nope.key"), ""}});
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("nope.key"), std::string::npos)
      << missing.status().ToString();
  auto client = NewClientChannel("127.0.0.1:1", {"", "", F("missing-ca.crt")});
  EXPECT_EQ(client.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::rpc

// TLS and mutual TLS between a real GrpcServer and real clients over
// 127.0.0.1, with certificates made by the openssl CLI for each run.

#include "common/grpc/tls.h"

#include <grpcpp/client_context.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/grpc/bearer_auth.h"
#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_server.h"
#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "common/grpc/testdata/echo.grpc.pb.h"

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

// A CA, a server certificate for 127.0.0.1 and a client certificate signed
// by it, and a client certificate from another CA; made once per run.
class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/tandem_tls_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    const std::string d = dir_;
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd " + d + "; exec 2>openssl.log;" +
        // Two CAs.
        "for ca in ca other; do openssl req -x509" + ec +
        " -keyout $ca.key -out $ca.crt -days 2 -subj /CN=tandem-test-$ca; done;" +
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext;" + "openssl req" + ec +
        " -keyout server.key -out server.csr -subj /CN=tandem-server;" +
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
        " -out server.crt -days 2 -extfile server.ext;" +
        "for c in client:ca stranger:other; do n=${c%%:*}; s=${c##*:};"
        " openssl req" +
        ec +
        " -keyout $n.key -out $n.csr -subj /CN=$n;"
        " openssl x509 -req -in $n.csr -CA $s.crt -CAkey $s.key -CAcreateserial"
        " -out $n.crt -days 2; done";
    {
      std::ofstream(d + "/make_certs.sh") << script << "\n";
    }
    if (std::system(("bash " + d + "/make_certs.sh").c_str()) != 0) {
      skip_reason_ = "openssl could not make the test certificates (see " + d + "/openssl.log)";
    }
  }
  static void TearDownTestSuite() {
    if (skip_reason_.empty()) std::filesystem::remove_all(dir_);
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static std::string F(const std::string& name) { return dir_ + "/" + name; }
  static TlsConfig Server(bool mutual) {
    return {F("server.crt"), F("server.key"), mutual ? F("ca.crt") : ""};
  }

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

  static std::string dir_;
  static std::string skip_reason_;
  CountingEcho service_;
  std::unique_ptr<GrpcServer> server_;
};
std::string TlsTest::dir_;
std::string TlsTest::skip_reason_;

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

// GrpcServer, BearerTokenAuth, ServeCall and the call log against a real gRPC
// server and client over unix sockets and 127.0.0.1.

#include "common/grpc/grpc_server.h"

#include <fcntl.h>
#include <grpcpp/client_context.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/grpc/bearer_auth.h"
#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "common/grpc/testdata/echo.grpc.pb.h"
#include "common/logging.h"
#include "common/unique_fd.h"

namespace tandem::rpc {
namespace {

namespace pb = ::tandem::rpc::test;

constexpr char kToken[] = "tok-Zq8VwK3p";
constexpr char kSecret[] = "S3CRET";

class EchoService final : public pb::Echo::Service {
 public:
  explicit EchoService(std::string token) : auth_(std::move(token)) {}
  grpc::Status Call(grpc::ServerContext* ctx, const pb::EchoRequest* req,
                    pb::EchoReply* resp) override {
    return ServeCall("Call", auth_, *ctx, [&]() -> grpc::Status {
      bodies_run.fetch_add(1);
      if (req->fail_code() != 0) {
        return grpc::Status(static_cast<grpc::StatusCode>(req->fail_code()), req->fail_message());
      }
      resp->set_name(req->name());
      return grpc::Status::OK;
    });
  }
  std::atomic<int> bodies_run{0};

 private:
  BearerTokenAuth auth_;
};

// One call; the token goes as bearer metadata when not empty.
Status CallEcho(const std::string& endpoint, const pb::EchoRequest& req,
                const std::string& token = "", pb::EchoReply* reply = nullptr) {
  auto stub = pb::Echo::NewStub(NewClientChannel(endpoint));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  AddBearerToken(&ctx, token);
  pb::EchoReply local;
  return FromGrpcStatus(stub->Call(&ctx, req, reply ? reply : &local));
}

pb::EchoRequest Named(const std::string& name) {
  pb::EchoRequest req;
  req.set_name(name);
  return req;
}

class GrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tandem_grpc_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(tmp_); }

  std::string tmp_;
  EchoService service_{""};
};

TEST_F(GrpcServerTest, ServesEveryUnixSpellingOnA0600SocketAndRemovesItAtShutdown) {
  const mode_t old_umask = ::umask(0);  // would make a 0777 socket
  const std::string path = tmp_ + "/s.sock";
  for (const std::string& prefix : {std::string("unix:"), std::string("unix://")}) {
    auto server = GrpcServer::Start(prefix + path, &service_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    EXPECT_EQ((*server)->port(), 0);
    EXPECT_EQ(UnixSocketPath(prefix + path), path);
    struct stat sb;
    ASSERT_EQ(::stat(path.c_str(), &sb), 0);
    EXPECT_TRUE(S_ISSOCK(sb.st_mode));
    EXPECT_EQ(sb.st_mode & 0777, 0600u) << std::oct << (sb.st_mode & 0777);
    pb::EchoReply reply;
    Status st = CallEcho("unix://" + path, Named("hello"), "", &reply);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(reply.name(), "hello");
    (*server)->Shutdown(std::chrono::milliseconds(100));
    EXPECT_NE(::stat(path.c_str(), &sb), 0) << "socket left behind";
  }
  EXPECT_EQ(::umask(old_umask), 0u);  // restored
  EXPECT_EQ(UnixSocketPath("127.0.0.1:9600"), "");
}

TEST_F(GrpcServerTest, ServesTcpEndpointsOnTheKernelsPort) {
  for (const std::string& endpoint :
       {std::string("127.0.0.1:0"), std::string("tcp://127.0.0.1:0")}) {
    auto server = GrpcServer::Start(endpoint, &service_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    ASSERT_NE((*server)->port(), 0);
    const std::string address = "tcp://127.0.0.1:" + std::to_string((*server)->port());
    Status st = CallEcho(address, Named("x"));
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
}

TEST_F(GrpcServerTest, AStaleSocketIsReplaced) {
  // What a killed server leaves: a bound socket file nobody listens on.
  const std::string path = tmp_ + "/stale.sock";
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  auto server = GrpcServer::Start("unix://" + path, &service_);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_TRUE(CallEcho("unix://" + path, Named("x")).ok());
}

TEST_F(GrpcServerTest, ALiveServersSocketIsNotTaken) {
  const std::string endpoint = "unix://" + tmp_ + "/live.sock";
  auto first = GrpcServer::Start(endpoint, &service_);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = GrpcServer::Start(endpoint, &service_);
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
  EXPECT_TRUE(CallEcho(endpoint, Named("x")).ok()) << "the first server lost its socket";
}

TEST_F(GrpcServerTest, AFileThatIsNotASocketIsNeverRemoved) {
  const std::string path = tmp_ + "/data";
  { std::ofstream(path) << "precious"; }
  auto server = GrpcServer::Start("unix://" + path, &service_);
  EXPECT_EQ(server.status().code(), StatusCode::kFailedPrecondition) << server.status().ToString();
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(GrpcServerTest, RejectsBadEndpointsAndTcpPortsInUse) {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:x",
                          "unix:", "http://127.0.0.1:1"}) {
    auto s = GrpcServer::Start(bad, &service_);
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(GrpcServer::Start(GrpcServerOptions{.endpoint = "127.0.0.1:0"}).status().code(),
            StatusCode::kInvalidArgument);  // no service
  auto first = GrpcServer::Start("127.0.0.1:0", &service_);
  ASSERT_TRUE(first.ok());
  // SO_REUSEPORT is off: a second server cannot share the first one's port.
  auto second = GrpcServer::Start("127.0.0.1:" + std::to_string((*first)->port()), &service_);
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
}

TEST_F(GrpcServerTest, BearerTokenGuardsEveryCallAndTheBodyNeverRunsWithoutIt) {
  EchoService guarded(kToken);
  const std::string endpoint = "unix://" + tmp_ + "/auth.sock";
  auto server = GrpcServer::Start(endpoint, &guarded);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(CallEcho(endpoint, Named("x")).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(CallEcho(endpoint, Named("x"), "wrong").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(CallEcho(endpoint, Named("x"), std::string(kToken) + "x").code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(guarded.bodies_run.load(), 0);
  EXPECT_TRUE(CallEcho(endpoint, Named("x"), kToken).ok());
  EXPECT_EQ(guarded.bodies_run.load(), 1);
}

// Runs `fn` with stderr (where the log goes) redirected to a file; returns
// what was written.
template <typename Fn>
std::string CaptureStderr(const std::string& file, Fn&& fn) {
  std::fflush(stderr);
  const int saved = ::dup(2);
  UniqueFd out(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600));
  ::dup2(out.get(), 2);
  fn();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(GrpcServerTest, CallLogNamesMethodCodeAndRequestButNoSecretOrToken) {
  const LogLevel old_level = GetLogLevel();
  SetLogLevel(LogLevel::kInfo);
  EchoService guarded(kToken);
  const std::string endpoint = "unix://" + tmp_ + "/log.sock";
  GrpcServerOptions options;
  options.endpoint = endpoint;
  options.services = {&guarded};
  options.log_tag = "echo_api";
  auto server = GrpcServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  pb::EchoRequest req = Named("visible-volume");
  (*req.mutable_secrets())["password"] = std::string(kSecret) + "-csi";
  req.set_auth_token(std::string(kSecret) + "-token");
  req.mutable_inner()->set_password(std::string(kSecret) + "-inner");
  pb::EchoRequest failing = req;
  failing.set_fail_code(grpc::NOT_FOUND);
  failing.set_fail_message("no volume visible-volume");
  const std::string log = CaptureStderr(tmp_ + "/stderr", [&] {
    EXPECT_TRUE(CallEcho(endpoint, req, kToken).ok());
    EXPECT_EQ(CallEcho(endpoint, failing, kToken).code(), StatusCode::kNotFound);
    EXPECT_EQ(CallEcho(endpoint, req, "not-the-token").code(), StatusCode::kUnauthenticated);
  });
  SetLogLevel(old_level);

  EXPECT_EQ(log.find(kSecret), std::string::npos) << log;
  EXPECT_EQ(log.find(kToken), std::string::npos) << log;
  EXPECT_EQ(log.find("not-the-token"), std::string::npos) << log;
  EXPECT_NE(log.find("echo_api: /tandem.rpc.test.Echo/Call OK "), std::string::npos) << log;
  EXPECT_NE(log.find("/tandem.rpc.test.Echo/Call NOT_FOUND "), std::string::npos) << log;
  EXPECT_NE(log.find("\"no volume visible-volume\""), std::string::npos) << log;
  EXPECT_NE(log.find("/tandem.rpc.test.Echo/Call UNAUTHENTICATED "), std::string::npos) << log;
  EXPECT_NE(log.find("name: \"visible-volume\""), std::string::npos) << log;
}

}  // namespace
}  // namespace tandem::rpc

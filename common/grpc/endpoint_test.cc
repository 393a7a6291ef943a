#include "common/grpc/endpoint.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem::rpc {
namespace {

struct Case {
  const char* text;
  Endpoint::Kind kind;
  const char* path_or_host;
  uint16_t port;
  const char* grpc_address;
};

TEST(EndpointTest, ParsesEverySpellingOperatorsAndKubeletUse) {
  const Case cases[] = {
      {"unix:///run/tandem/engine.sock", Endpoint::Kind::kUnix, "/run/tandem/engine.sock", 0,
       "unix:/run/tandem/engine.sock"},
      {"unix:/run/x.sock", Endpoint::Kind::kUnix, "/run/x.sock", 0, "unix:/run/x.sock"},
      {"unix:////run/x.sock", Endpoint::Kind::kUnix, "/run/x.sock", 0, "unix:/run/x.sock"},
      {"unix://csi.sock", Endpoint::Kind::kUnix, "csi.sock", 0, "unix:csi.sock"},
      {"unix:csi.sock", Endpoint::Kind::kUnix, "csi.sock", 0, "unix:csi.sock"},
      {"tcp://127.0.0.1:9600", Endpoint::Kind::kTcp, "127.0.0.1", 9600, "127.0.0.1:9600"},
      {"127.0.0.1:0", Endpoint::Kind::kTcp, "127.0.0.1", 0, "127.0.0.1:0"},
      {"[::1]:9600", Endpoint::Kind::kTcp, "[::1]", 9600, "[::1]:9600"},
      {"node-a.example:65535", Endpoint::Kind::kTcp, "node-a.example", 65535,
       "node-a.example:65535"},
  };
  for (const Case& c : cases) {
    Result<Endpoint> e = ParseEndpoint(c.text);
    ASSERT_TRUE(e.ok()) << c.text << ": " << e.status().ToString();
    EXPECT_EQ(e->kind, c.kind) << c.text;
    EXPECT_EQ(e->is_unix() ? e->path : e->host, c.path_or_host) << c.text;
    EXPECT_EQ(e->port, c.port) << c.text;
    EXPECT_EQ(e->GrpcAddress(), c.grpc_address) << c.text;
  }
}

TEST(EndpointTest, RejectsMalformedEndpointsAsInvalidArgument) {
  const std::string too_long = "unix:///" + std::string(kMaxUnixPathLength, 'a');
  for (const std::string& bad :
       {std::string("unix:"), std::string("unix://"), too_long, std::string("127.0.0.1"),
        std::string("127.0.0.1:"), std::string("127.0.0.1:99999"), std::string("127.0.0.1:9k"),
        std::string("127.0.0.1: 80"), std::string(":9600"), std::string("tcp://:9600"),
        std::string("http://127.0.0.1:80"), std::string("dns:///x:1"), std::string(""),
        std::string("tcp://tcp://127.0.0.1:1"), std::string("a/b:1"), std::string("a b:1"),
        std::string("[::1:1"), std::string("[]:1"), std::string("[::g]:1"),
        // Hosts gRPC would read as its URI schemes (endpoint_fuzz found "tcp://unix:00").
        std::string("tcp://unix:00"), std::string("UNIX:80"), std::string("dns:80"),
        std::string("tcp://ipv4:1"), std::string("tcp://unix-abstract:1")}) {
    Result<Endpoint> e = ParseEndpoint(bad);
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  EXPECT_EQ(ParseEndpoint("127.0.0.1:0", /*allow_zero_port=*/false).status().code(),
            StatusCode::kInvalidArgument);
  // The longest path the kernel takes is fine.
  EXPECT_TRUE(ParseEndpoint("unix:/" + std::string(kMaxUnixPathLength - 1, 'a')).ok());
}

}  // namespace
}  // namespace tandem::rpc

// Request validation and message mapping of the management API, without a
// server: each bad field is INVALID_ARGUMENT naming that field, and every
// field of TargetInfo reaches the proto Target.

#include "replica-engine/api/proto_convert.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem::api {
namespace {

pb::CreateTargetRequest GoodTargetRequest() {
  pb::CreateTargetRequest req;
  req.set_volume_id("vol-1");
  req.set_epoch(7);
  req.set_token("data-token");
  req.set_size_bytes(1 << 20);
  for (uint32_t port : {9501u, 9502u}) {
    pb::ReplicaEndpoint* e = req.add_replicas();
    e->set_host("127.0.0.1");
    e->set_port(port);
    e->set_local(port == 9502);
  }
  return req;
}

// Expects INVALID_ARGUMENT whose message mentions `field`.
void ExpectInvalid(const pb::CreateTargetRequest& req, const std::string& field) {
  Result<target::TargetSpec> spec = TargetSpecFromProto(req, 5000);
  ASSERT_FALSE(spec.ok()) << "accepted a request with a bad " << field;
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find(field), std::string::npos) << spec.status().ToString();
}

TEST(TargetSpecFromProtoTest, GoodRequestIsCopiedFieldByField) {
  pb::CreateTargetRequest req = GoodTargetRequest();
  req.set_nbd_tcp_address("127.0.0.1:0");
  Result<target::TargetSpec> spec = TargetSpecFromProto(req, 4321);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  const target::TargetOptions& o = spec->options;
  EXPECT_EQ(o.volume_id, "vol-1");
  EXPECT_EQ(o.epoch, 7u);
  EXPECT_EQ(o.token, "data-token");
  EXPECT_EQ(o.size, 1u << 20);
  EXPECT_EQ(o.request_timeout_ms, 4321u);  // 0 in the request: the engine default
  ASSERT_EQ(o.replicas.size(), 2u);
  EXPECT_EQ(o.replicas[0].host, "127.0.0.1");
  EXPECT_EQ(o.replicas[0].port, 9501);
  EXPECT_FALSE(o.replicas[0].local);
  EXPECT_EQ(o.replicas[1].port, 9502);
  EXPECT_TRUE(o.replicas[1].local);
  EXPECT_EQ(spec->nbd_tcp_address, "127.0.0.1:0");
}

TEST(TargetSpecFromProtoTest, ExplicitTimeoutAndZeroSizeAreKept) {
  pb::CreateTargetRequest req = GoodTargetRequest();
  req.set_request_timeout_ms(250);
  req.set_size_bytes(0);
  Result<target::TargetSpec> spec = TargetSpecFromProto(req, 5000);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->options.request_timeout_ms, 250u);
  EXPECT_EQ(spec->options.size, 0u);
}

TEST(TargetSpecFromProtoTest, BadFieldsAreInvalidArgumentNamingTheField) {
  pb::CreateTargetRequest req = GoodTargetRequest();
  req.set_volume_id("a/b");
  ExpectInvalid(req, "volume_id");

  req = GoodTargetRequest();
  req.set_epoch(0);
  ExpectInvalid(req, "epoch");

  req = GoodTargetRequest();
  req.clear_replicas();
  ExpectInvalid(req, "replicas");

  req = GoodTargetRequest();
  for (uint32_t port = 9503; port <= 9506; ++port) {
    pb::ReplicaEndpoint* e = req.add_replicas();
    e->set_host("127.0.0.1");
    e->set_port(port);
  }
  ExpectInvalid(req, "replicas");  // 6

  req = GoodTargetRequest();
  req.mutable_replicas(1)->set_port(9501);
  ExpectInvalid(req, "replicas[1]");  // duplicate endpoint

  for (const char* host : {"", "localhost", "1.2.3", "1.2.3.4.5", "256.1.1.1", "::1"}) {
    req = GoodTargetRequest();
    req.mutable_replicas(0)->set_host(host);
    ExpectInvalid(req, "replicas[0].host");
  }

  for (uint32_t port : {0u, 65536u}) {
    req = GoodTargetRequest();
    req.mutable_replicas(1)->set_port(port);
    ExpectInvalid(req, "replicas[1].port");
  }

  req = GoodTargetRequest();
  req.set_size_bytes(4097);
  ExpectInvalid(req, "size_bytes");

  for (const char* addr :
       {"127.0.0.1", "host:10809", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:x"}) {
    req = GoodTargetRequest();
    req.set_nbd_tcp_address(addr);
    ExpectInvalid(req, "nbd_tcp_address");
  }
}

TEST(ReplicaConfigFromProtoTest, DefaultsBlockSizeTo4096) {
  pb::CreateReplicaRequest req;
  req.set_volume_id("vol-1");
  req.set_replica_id("r1");
  req.set_size_bytes(1 << 20);
  Result<replica::ReplicaConfig> c = ReplicaConfigFromProto(req);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->block_size, 4096u);
  EXPECT_EQ(c->size, 1u << 20);
  EXPECT_EQ(c->replica_id, "r1");
  EXPECT_TRUE(c->data_path.empty());
}

TEST(ReplicaConfigFromProtoTest, BadFieldsAreInvalidArgumentNamingTheField) {
  struct Case {
    const char* volume_id;
    const char* replica_id;
    uint64_t size;
    uint32_t block_size;
    const char* field;
  };
  const Case cases[] = {
      {"", "r1", 1 << 20, 0, "volume_id"},      {"..", "r1", 1 << 20, 0, "volume_id"},
      {"a b", "r1", 1 << 20, 0, "volume_id"},   {"v", "", 1 << 20, 0, "replica_id"},
      {"v", "r/1", 1 << 20, 0, "replica_id"},   {"v", "r1", 0, 0, "size_bytes"},
      {"v", "r1", 4096 + 512, 0, "size_bytes"}, {"v", "r1", 1 << 20, 1000, "block_size"},
      {"v", "r1", 1 << 20, 256, "block_size"},  {"v", "r1", 1 << 20, 131072, "block_size"},
  };
  for (const Case& c : cases) {
    pb::CreateReplicaRequest req;
    req.set_volume_id(c.volume_id);
    req.set_replica_id(c.replica_id);
    req.set_size_bytes(c.size);
    req.set_block_size(c.block_size);
    Result<replica::ReplicaConfig> r = ReplicaConfigFromProto(req);
    ASSERT_FALSE(r.ok()) << "accepted bad " << c.field;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.field), std::string::npos) << r.status().ToString();
  }
}

TEST(TargetToProtoTest, EveryFieldIsMapped) {
  target::TargetInfo info;
  info.volume_id = "vol-9";
  info.nbd_socket = "/run/tandem/nbd/vol-9.sock";
  info.nbd_tcp_port = 10809;
  info.epoch = 4;
  target::TargetStatus& s = info.status;
  s.volume_id = "vol-9";
  s.state = target::TargetState::kDegraded;
  s.size = 8 << 20;
  s.epoch = 4;
  s.generation = 3;
  s.reads = 1;
  s.writes = 2;
  s.flushes = 3;
  s.errors = 4;
  s.bytes_read = 5;
  s.bytes_written = 6;
  target::ReplicaStatus healthy;
  healthy.address = "127.0.0.1:9501";
  healthy.replica_id = "r1";
  healthy.state = target::ReplicaState::kHealthy;
  healthy.generation = 3;
  healthy.inflight = 2;
  healthy.reads = 10;
  healthy.writes = 11;
  target::ReplicaStatus faulted;
  faulted.address = "127.0.0.1:9502";
  faulted.state = target::ReplicaState::kFaulted;
  faulted.generation = 2;
  faulted.errors = 1;
  faulted.last_error = "DEADLINE_EXCEEDED: timed out";
  s.replicas = {healthy, faulted};

  pb::Target t;
  TargetToProto(info, &t);
  EXPECT_EQ(t.volume_id(), "vol-9");
  EXPECT_EQ(t.nbd_socket(), "/run/tandem/nbd/vol-9.sock");
  EXPECT_EQ(t.nbd_tcp_port(), 10809u);
  EXPECT_EQ(t.epoch(), 4u);
  EXPECT_EQ(t.state(), pb::TARGET_STATE_DEGRADED);
  EXPECT_EQ(t.generation(), 3u);
  EXPECT_EQ(t.size_bytes(), 8u << 20);
  EXPECT_EQ(t.reads(), 1u);
  EXPECT_EQ(t.writes(), 2u);
  EXPECT_EQ(t.flushes(), 3u);
  EXPECT_EQ(t.errors(), 4u);
  EXPECT_EQ(t.bytes_read(), 5u);
  EXPECT_EQ(t.bytes_written(), 6u);
  ASSERT_EQ(t.replicas_size(), 2);
  EXPECT_EQ(t.replicas(0).address(), "127.0.0.1:9501");
  EXPECT_EQ(t.replicas(0).replica_id(), "r1");
  EXPECT_EQ(t.replicas(0).state(), pb::REPLICA_STATE_HEALTHY);
  EXPECT_EQ(t.replicas(0).generation(), 3u);
  EXPECT_EQ(t.replicas(0).inflight(), 2u);
  EXPECT_EQ(t.replicas(0).reads(), 10u);
  EXPECT_EQ(t.replicas(0).writes(), 11u);
  EXPECT_EQ(t.replicas(1).state(), pb::REPLICA_STATE_FAULTED);
  EXPECT_EQ(t.replicas(1).errors(), 1u);
  EXPECT_EQ(t.replicas(1).last_error(), "DEADLINE_EXCEEDED: timed out");
}

TEST(TargetToProtoTest, EveryStateHasItsOwnProtoValue) {
  EXPECT_EQ(TargetStateToProto(target::TargetState::kStarting), pb::TARGET_STATE_STARTING);
  EXPECT_EQ(TargetStateToProto(target::TargetState::kReady), pb::TARGET_STATE_READY);
  EXPECT_EQ(TargetStateToProto(target::TargetState::kDegraded), pb::TARGET_STATE_DEGRADED);
  EXPECT_EQ(TargetStateToProto(target::TargetState::kFailed), pb::TARGET_STATE_FAILED);
  EXPECT_EQ(TargetStateToProto(target::TargetState::kFenced), pb::TARGET_STATE_FENCED);
  EXPECT_EQ(ReplicaStateToProto(target::ReplicaState::kConnecting), pb::REPLICA_STATE_CONNECTING);
  EXPECT_EQ(ReplicaStateToProto(target::ReplicaState::kHealthy), pb::REPLICA_STATE_HEALTHY);
  EXPECT_EQ(ReplicaStateToProto(target::ReplicaState::kStale), pb::REPLICA_STATE_STALE);
  EXPECT_EQ(ReplicaStateToProto(target::ReplicaState::kFaulted), pb::REPLICA_STATE_FAULTED);
  EXPECT_EQ(ReplicaStateToProto(target::ReplicaState::kRebuilding), pb::REPLICA_STATE_REBUILDING);
}

TEST(ParseIpv4HostPortTest, AcceptsDottedQuadAndRangeChecksPort) {
  std::string host;
  uint16_t port = 1;
  ASSERT_TRUE(ParseIpv4HostPort("f", "10.0.0.1:65535", false, &host, &port).ok());
  EXPECT_EQ(host, "10.0.0.1");
  EXPECT_EQ(port, 65535);
  EXPECT_TRUE(ParseIpv4HostPort("f", "127.0.0.1:0", true, &host, &port).ok());
  EXPECT_EQ(port, 0);
  EXPECT_EQ(ParseIpv4HostPort("f", "127.0.0.1:0", false, &host, &port).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseIpv4HostPort("f", "127.1:80", true, &host, &port).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::api

// Request validation and message mapping of the management API, without a
// server: each bad field is INVALID_ARGUMENT naming that field, and every
// field of TargetInfo reaches the proto Target.

#include "replica-engine/service/proto_convert.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace tandem::service {
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
  Result<attach::TargetSpec> spec = TargetSpecFromProto(req, TargetDefaults{});
  ASSERT_FALSE(spec.ok()) << "accepted a request with a bad " << field;
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find(field), std::string::npos) << spec.status().ToString();
}

TEST(TargetSpecFromProtoTest, GoodRequestIsCopiedFieldByField) {
  pb::CreateTargetRequest req = GoodTargetRequest();
  req.set_nbd_tcp_address("127.0.0.1:0");
  TargetDefaults defaults;
  defaults.request_timeout_ms = 4321;
  defaults.reconnect_interval_ms = 750;
  defaults.rebuild_rate_bytes_per_sec = 50 << 20;
  Result<attach::TargetSpec> spec = TargetSpecFromProto(req, defaults);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  const target::TargetOptions& o = spec->options;
  EXPECT_EQ(o.volume_id, "vol-1");
  EXPECT_EQ(o.epoch, 7u);
  EXPECT_EQ(o.token, "data-token");
  EXPECT_EQ(o.size, 1u << 20);
  // 0 in the request: the engine defaults.
  EXPECT_EQ(o.request_timeout_ms, 4321u);
  EXPECT_EQ(o.reconnect_interval_ms, 750u);
  EXPECT_EQ(o.rebuild_rate_bytes_per_sec, 50u << 20);
  ASSERT_EQ(o.replicas.size(), 2u);
  EXPECT_EQ(o.replicas[0].host, "127.0.0.1");
  EXPECT_EQ(o.replicas[0].port, 9501);
  EXPECT_FALSE(o.replicas[0].local);
  EXPECT_EQ(o.replicas[1].port, 9502);
  EXPECT_TRUE(o.replicas[1].local);
  EXPECT_EQ(spec->nbd_tcp_address, "127.0.0.1:0");
}

TEST(TargetSpecFromProtoTest, ExplicitValuesOverrideTheDefaultsAndZeroSizeIsKept) {
  pb::CreateTargetRequest req = GoodTargetRequest();
  req.set_request_timeout_ms(250);
  req.set_size_bytes(0);
  req.set_reconnect_interval_ms(100);
  req.set_rebuild_rate_bytes_per_sec(1 << 20);
  TargetDefaults defaults;
  defaults.rebuild_rate_bytes_per_sec = 7 << 20;
  Result<attach::TargetSpec> spec = TargetSpecFromProto(req, defaults);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->options.request_timeout_ms, 250u);
  EXPECT_EQ(spec->options.size, 0u);
  EXPECT_EQ(spec->options.reconnect_interval_ms, 100u);
  EXPECT_EQ(spec->options.rebuild_rate_bytes_per_sec, 1u << 20);
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

  req = GoodTargetRequest();
  req.set_rebuild_rate_bytes_per_sec(kMinRebuildRate - 1);
  ExpectInvalid(req, "rebuild_rate_bytes_per_sec");

  for (uint32_t ms : {1u, kMinReconnectIntervalMs - 1, kMaxReconnectIntervalMs + 1}) {
    req = GoodTargetRequest();
    req.set_reconnect_interval_ms(ms);
    ExpectInvalid(req, "reconnect_interval_ms");
  }
}

TEST(EndpointFromProtoTest, ValidatesHostAndPortNamingTheField) {
  pb::ReplicaEndpoint e;
  e.set_host("10.1.2.3");
  e.set_port(9501);
  e.set_local(true);
  Result<target::ReplicaEndpoint> ok = EndpointFromProto("replica", e);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->host, "10.1.2.3");
  EXPECT_EQ(ok->port, 9501);
  EXPECT_TRUE(ok->local);
  e.set_host("replica-1");
  Result<target::ReplicaEndpoint> bad_host = EndpointFromProto("replica", e);
  EXPECT_EQ(bad_host.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_host.status().message().find("replica.host"), std::string::npos);
  e.set_host("10.1.2.3");
  e.set_port(0);
  Result<target::ReplicaEndpoint> bad_port = EndpointFromProto("replica", e);
  EXPECT_EQ(bad_port.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_port.status().message().find("replica.port"), std::string::npos);
}

TEST(ReplicaAddressFromProtoTest, ReturnsTheCanonicalFormOrNamesTheField) {
  Result<std::string> a = ReplicaAddressFromProto("address", "127.0.0.1:09501");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(*a, "127.0.0.1:9501");
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "host:9501",
                          "127.0.0.1:9501:local", "127.1:9501"}) {
    Result<std::string> r = ReplicaAddressFromProto("address", bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("address"), std::string::npos) << r.status().ToString();
  }
}

TEST(ValidateRebuildRateTest, ZeroOrAtLeastTheMinimum) {
  EXPECT_TRUE(ValidateRebuildRate("bytes_per_sec", 0).ok());
  EXPECT_TRUE(ValidateRebuildRate("bytes_per_sec", kMinRebuildRate).ok());
  EXPECT_TRUE(ValidateRebuildRate("bytes_per_sec", UINT64_MAX).ok());
  Status low = ValidateRebuildRate("bytes_per_sec", 100);
  EXPECT_EQ(low.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(low.message().find("bytes_per_sec"), std::string::npos);
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
      {"", "r1", 1 << 20, 0, "volume_id"},       {"..", "r1", 1 << 20, 0, "volume_id"},
      {"a b", "r1", 1 << 20, 0, "volume_id"},    {"v", "", 1 << 20, 0, "replica_id"},
      {"v", "r/1", 1 << 20, 0, "replica_id"},    {"v", "r1", 0, 0, "size_bytes"},
      {"v", "r1", 4096 + 512, 0, "size_bytes"},  {"v", "r1", 1 << 20, 1000, "block_size"},
      {"v", "r1", 1 << 20, 256, "block_size"},   {"v", "r1", 1 << 20, 131072, "block_size"},
      {"v", "r1", 1 << 20, 512, "block_size"},   {"v", "r1", 1 << 20, 8192, "block_size"},
      {"v", "r1", 1 << 20, 65536, "block_size"},
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

pb::CreateReplicaRequest GoodReplicaRequest(uint64_t size) {
  pb::CreateReplicaRequest req;
  req.set_volume_id("vol-1");
  req.set_replica_id("r1");
  req.set_size_bytes(size);
  return req;
}

// Issue 10: both backends need 4 KiB-aligned I/O, so a 512-byte block size
// would let one 512-byte read fault every replica.
TEST(ReplicaConfigFromProtoTest, OnlyTheSupportedBlockSizeIsAccepted) {
  pb::CreateReplicaRequest req = GoodReplicaRequest(1 << 20);
  req.set_block_size(4096);
  ASSERT_TRUE(ReplicaConfigFromProto(req).ok());
  for (uint32_t bs : {512u, 1024u, 2048u, 8192u, 65536u}) {
    req.set_block_size(bs);
    Result<replica::ReplicaConfig> r = ReplicaConfigFromProto(req);
    ASSERT_FALSE(r.ok()) << "accepted block_size " << bs;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind("block_size " + std::to_string(bs), 0), 0u)
        << r.status().ToString();
    EXPECT_NE(r.status().message().find("only 4096"), std::string::npos) << r.status().ToString();
  }
}

// Issue 10: a huge size_bytes made Replica::Create zero-fill a dirty map of
// size / 512 KiB bytes (8 TiB for 2^62).
TEST(ReplicaConfigFromProtoTest, SizeWhoseMetadataExceedsTheLimitIsOutOfRange) {
  replica::ReplicaConfig defaults;
  const uint64_t max = MaxReplicaSize(defaults);
  // 64 MiB of maps at 1 bit per 64 KiB + 1 bit per 4 MiB, less the header.
  EXPECT_GT(max, 31ull << 40);
  EXPECT_LT(max, 32ull << 40);
  EXPECT_EQ(max % 4096, 0u);
  defaults.size = max;
  EXPECT_TRUE(ValidateReplicaSize(defaults).ok());

  ASSERT_TRUE(ReplicaConfigFromProto(GoodReplicaRequest(max)).ok());
  for (uint64_t size : {uint64_t{max + 4096}, uint64_t{32} << 40, uint64_t{1} << 50,
                        uint64_t{1} << 62, uint64_t{UINT64_MAX - 4095}}) {
    Result<replica::ReplicaConfig> r = ReplicaConfigFromProto(GoodReplicaRequest(size));
    ASSERT_FALSE(r.ok()) << "accepted size_bytes " << size;
    EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status().ToString();
    EXPECT_EQ(r.status().message().rfind("size_bytes " + std::to_string(size), 0), 0u)
        << r.status().ToString();
    EXPECT_NE(r.status().message().find(std::to_string(kMaxReplicaMetadataBytes)),
              std::string::npos)
        << r.status().ToString();
    EXPECT_NE(r.status().message().find("at most " + std::to_string(max)), std::string::npos)
        << r.status().ToString();
  }
}

TEST(ReplicaConfigFromProtoTest, DataPathWithANulIsInvalid) {
  pb::CreateReplicaRequest req = GoodReplicaRequest(1 << 20);
  req.set_data_path(std::string("/dev/sdb\0/x", 11));
  Result<replica::ReplicaConfig> r = ReplicaConfigFromProto(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("data_path", 0), 0u) << r.status().ToString();
}

class CheckReplicaCapacityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-capacity-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  static replica::ReplicaConfig Config(uint64_t size, const std::string& data_path = "") {
    replica::ReplicaConfig c;
    c.volume_id = "vol-1";
    c.replica_id = "r1";
    c.size = size;
    c.data_path = data_path;
    return c;
  }
  std::string dir_;
};

TEST_F(CheckReplicaCapacityTest, SparseFileIsBoundedByTheFileSystemsTotalSizeNotItsFreeSpace) {
  struct statvfs vfs;
  ASSERT_EQ(::statvfs(dir_.c_str(), &vfs), 0);
  const uint64_t total = uint64_t(vfs.f_blocks) * vfs.f_frsize / 4096 * 4096;
  const uint64_t free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
  // The whole file system: more than is free, still fine (thin provisioning).
  ASSERT_GT(total, free_bytes);
  EXPECT_TRUE(CheckReplicaCapacity(Config(total), dir_).ok());
  Status st = CheckReplicaCapacity(Config(total + 4096), dir_);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
  EXPECT_EQ(st.message().rfind("size_bytes " + std::to_string(total + 4096), 0), 0u)
      << st.ToString();
  EXPECT_NE(st.message().find("file system"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("not its free space"), std::string::npos) << st.ToString();
  EXPECT_EQ(CheckReplicaCapacity(Config(1ull << 62), dir_).code(), StatusCode::kOutOfRange);
  // A data dir that is not there: the error, not a pass.
  EXPECT_FALSE(CheckReplicaCapacity(Config(4096), dir_ + "/missing").ok());
}

TEST_F(CheckReplicaCapacityTest, DataPathFileIsBoundedByItsSize) {
  const std::string path = dir_ + "/disk.img";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
  ::close(fd);
  EXPECT_TRUE(CheckReplicaCapacity(Config(1 << 20, path), dir_).ok());
  Status st = CheckReplicaCapacity(Config(2 << 20, path), dir_);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
  EXPECT_EQ(st.message().rfind("size_bytes", 0), 0u) << st.ToString();
  EXPECT_NE(st.message().find(path), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("1048576"), std::string::npos) << st.ToString();
  // Missing, a directory, a FIFO (must not block): left to Replica::Create.
  EXPECT_TRUE(CheckReplicaCapacity(Config(1 << 20, dir_ + "/missing"), dir_).ok());
  EXPECT_TRUE(CheckReplicaCapacity(Config(1 << 20, dir_), dir_).ok());
  ASSERT_EQ(::mkfifo((dir_ + "/fifo").c_str(), 0644), 0);
  EXPECT_TRUE(CheckReplicaCapacity(Config(1 << 20, dir_ + "/fifo"), dir_).ok());
}

TEST_F(CheckReplicaCapacityTest, DataPathBlockDeviceIsBoundedByItsSize) {
  // Any block device we may open read-only (nothing is read or written).
  std::string dev;
  uint64_t dev_size = 0;
  for (const auto& e : std::filesystem::directory_iterator("/dev")) {
    struct stat sb;
    if (::stat(e.path().c_str(), &sb) != 0 || !S_ISBLK(sb.st_mode)) continue;
    int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    uint64_t size = 0;
    const bool got = ::ioctl(fd, BLKGETSIZE64, &size) == 0 && size >= 4096;
    ::close(fd);
    if (got) {
      dev = e.path();
      dev_size = size;
      break;
    }
  }
  if (dev.empty()) GTEST_SKIP() << "no block device to open read-only";
  const uint64_t fits = dev_size / 4096 * 4096;
  EXPECT_TRUE(CheckReplicaCapacity(Config(fits, dev), dir_).ok()) << dev;
  Status st = CheckReplicaCapacity(Config(fits + 4096, dev), dir_);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
  EXPECT_NE(st.message().find("block device of " + std::to_string(dev_size) + " bytes"),
            std::string::npos)
      << st.ToString();
}

// Regression (engine API fuzzer): inet_pton stops at a NUL, so
// "127.0.0.1\0x" passed as 127.0.0.1 and two spellings of one endpoint
// passed as distinct replicas.
TEST(IsDottedQuadIpv4Test, AHostWithAnEmbeddedNulIsNotAnAddress) {
  EXPECT_TRUE(IsDottedQuadIpv4("127.0.0.1"));
  EXPECT_FALSE(IsDottedQuadIpv4(std::string("127.0.0.1\0", 10)));
  EXPECT_FALSE(IsDottedQuadIpv4(std::string("127.0.0.1\0x", 11)));
  EXPECT_FALSE(IsDottedQuadIpv4(std::string(1, '\0') + "127.0.0.1"));

  pb::ReplicaEndpoint e;
  e.set_host(std::string("10.1.2.3\0evil", 13));
  e.set_port(9501);
  Result<target::ReplicaEndpoint> r = EndpointFromProto("replica", e);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("replica.host", 0), 0u) << r.status().ToString();

  Result<std::string> a = ReplicaAddressFromProto("address", std::string("127.0.0.1\0:9501", 15));
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument) << a.status().ToString();

  pb::CreateTargetRequest req = GoodTargetRequest();
  req.mutable_replicas(1)->set_port(9501);
  req.mutable_replicas(1)->set_host(std::string("127.0.0.1\0", 10));
  Result<attach::TargetSpec> spec = TargetSpecFromProto(req, TargetDefaults{});
  ASSERT_FALSE(spec.ok()) << "the same endpoint twice, spelt two ways, was accepted";
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(spec.status().message().rfind("replicas[1]", 0), 0u) << spec.status().ToString();
}

TEST(TargetToProtoTest, EveryFieldIsMapped) {
  attach::TargetInfo info;
  info.volume_id = "vol-9";
  info.nbd_socket = "/run/tandem/nbd/vol-9.sock";
  info.nbd_tcp_port = 10809;
  info.epoch = 4;
  info.loop_index = 3;
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
  s.rebuild.state = target::RebuildState::kRunning;
  s.rebuild.mode = target::RebuildMode::kIncremental;
  s.rebuild.replica = "127.0.0.1:9502";
  s.rebuild.source = "127.0.0.1:9501";
  s.rebuild.bytes_total = 100;
  s.rebuild.bytes_done = 40;
  s.rebuild.bytes_copied = 30;
  s.rebuild.resumed_from = 8;
  s.rebuild.rate_bytes_per_sec = 1.5;
  s.rebuild.eta_seconds = 2.5;
  s.rebuild.rate_limit_bytes_per_sec = 1 << 20;
  s.rebuild.last_error = "none yet";
  s.rebuilds_completed = 2;
  s.rebuild_bytes_copied = 77;

  pb::Target t;
  TargetToProto(info, &t);
  EXPECT_EQ(t.volume_id(), "vol-9");
  EXPECT_EQ(t.nbd_socket(), "/run/tandem/nbd/vol-9.sock");
  EXPECT_EQ(t.nbd_tcp_port(), 10809u);
  EXPECT_EQ(t.epoch(), 4u);
  EXPECT_EQ(t.loop_index(), 3u);
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
  const pb::RebuildStatus& rb = t.rebuild();
  EXPECT_EQ(rb.state(), pb::REBUILD_STATE_RUNNING);
  EXPECT_EQ(rb.mode(), pb::REBUILD_MODE_INCREMENTAL);
  EXPECT_EQ(rb.replica(), "127.0.0.1:9502");
  EXPECT_EQ(rb.source(), "127.0.0.1:9501");
  EXPECT_EQ(rb.bytes_total(), 100u);
  EXPECT_EQ(rb.bytes_done(), 40u);
  EXPECT_EQ(rb.bytes_copied(), 30u);
  EXPECT_EQ(rb.resumed_from(), 8u);
  EXPECT_DOUBLE_EQ(rb.rate_bytes_per_sec(), 1.5);
  EXPECT_DOUBLE_EQ(rb.eta_seconds(), 2.5);
  EXPECT_EQ(rb.rate_limit_bytes_per_sec(), 1u << 20);
  EXPECT_EQ(rb.last_error(), "none yet");
  EXPECT_EQ(t.rebuilds_completed(), 2u);
  EXPECT_EQ(t.rebuild_bytes_copied(), 77u);
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
  EXPECT_EQ(RebuildStateToProto(target::RebuildState::kIdle), pb::REBUILD_STATE_IDLE);
  EXPECT_EQ(RebuildStateToProto(target::RebuildState::kRunning), pb::REBUILD_STATE_RUNNING);
  EXPECT_EQ(RebuildStateToProto(target::RebuildState::kDone), pb::REBUILD_STATE_DONE);
  EXPECT_EQ(RebuildStateToProto(target::RebuildState::kFailed), pb::REBUILD_STATE_FAILED);
  EXPECT_EQ(RebuildModeToProto(target::RebuildMode::kNone), pb::REBUILD_MODE_NONE);
  EXPECT_EQ(RebuildModeToProto(target::RebuildMode::kFull), pb::REBUILD_MODE_FULL);
  EXPECT_EQ(RebuildModeToProto(target::RebuildMode::kIncremental), pb::REBUILD_MODE_INCREMENTAL);
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
}  // namespace tandem::service

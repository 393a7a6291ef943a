#include "replica-engine/service/engine_flags.h"

#include <stdlib.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace tandem::service {
namespace {

TEST(EngineFlagsTest, CpuIsMinusOneOrAConfiguredCpu) {
  int cpu = 7;
  ASSERT_TRUE(ParseCpu("-1", 2, &cpu).ok());
  EXPECT_EQ(cpu, -1);
  ASSERT_TRUE(ParseCpu("0", 2, &cpu).ok());
  EXPECT_EQ(cpu, 0);
  ASSERT_TRUE(ParseCpu("1", 2, &cpu).ok());
  EXPECT_EQ(cpu, 1);
  ASSERT_TRUE(ParseCpu("63", 64, &cpu).ok());
  EXPECT_EQ(cpu, 63);
}

// atoi made each of these CPU 0 (or a CPU the machine lacks, whose pin then
// failed at run time).
TEST(EngineFlagsTest, CpuGarbageIsInvalidArgumentNamingTheFlag) {
  for (const char* bad :
       {"", "abc", "1x", " 1", "1 ", "+1", "-2", "-0", "0x1", "2", "99", "9999999999", "1.5"}) {
    int cpu = 7;
    Status st = ParseCpu(bad, 2, &cpu);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_EQ(st.message().rfind("--cpu", 0), 0u) << st.ToString();
    EXPECT_EQ(cpu, 7) << "'" << bad << "' changed the output";
  }
}

// Parses `args` (flags only) into a config, as tandem-engine's main does.
Status Parse(std::vector<std::string> args, EngineConfig* config) {
  args.insert(args.begin(), "tandem-engine");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  Flags flags;
  DefineEngineFlags(&flags);
  TANDEM_RETURN_IF_ERROR(flags.Parse(static_cast<int>(argv.size()), argv.data()));
  return ParseEngineConfig(flags, /*configured_cpus=*/4, config);
}

TEST(EngineConfigTest, DefaultsAndDerivedValues) {
  EngineConfig c;
  ASSERT_TRUE(Parse({"--data-dir=/d", "--node-id=n1", "--grpc-listen=unix:///run/e.sock",
                     "--listen=127.0.0.1:0", "--cpu=3", "--create-replica=v1:8M",
                     "--create-replica=v2:4M:r9", "--allowed-device=/dev/sdb"},
                    &c)
                  .ok());
  EXPECT_EQ(c.service.node_id, "n1");
  EXPECT_EQ(c.service.data_dir, "/d");
  EXPECT_EQ(c.nbd_dir, "/d/nbd");
  EXPECT_EQ(c.grpc_listen, "unix:///run/e.sock");
  EXPECT_EQ(c.server.listen_address, "127.0.0.1");
  EXPECT_EQ(c.server.port, 0);
  EXPECT_EQ(c.server.cpu, 3);
  EXPECT_EQ(c.server.buffer_pool_bytes, 128ull << 20);
  EXPECT_EQ(c.server.max_connections, 1024u);
  EXPECT_EQ(c.server.handshake_timeout_ms, 10000u);
  EXPECT_EQ(c.server.idle_timeout_ms, 600000u);
  EngineConfig limits;
  ASSERT_TRUE(
      Parse({"--max-connections=8", "--handshake-timeout-ms=500", "--idle-timeout-ms=0"}, &limits)
          .ok());
  EXPECT_EQ(limits.server.max_connections, 8u);
  EXPECT_EQ(limits.server.handshake_timeout_ms, 500u);
  EXPECT_EQ(limits.server.idle_timeout_ms, 0u);
  EXPECT_EQ(c.backend, "auto");
  EXPECT_EQ(c.service.target_defaults.request_timeout_ms, 5000u);
  EXPECT_EQ(c.service.target_defaults.reconnect_interval_ms, 1000u);
  ASSERT_EQ(c.create.size(), 2u);
  EXPECT_EQ(c.create[0].replica_id, "v1-r");
  EXPECT_EQ(c.create[0].size, 8ull << 20);
  EXPECT_EQ(c.create[1].replica_id, "r9");
  EXPECT_EQ(c.service.allowed_devices, std::vector<std::string>{"/dev/sdb"});
  EXPECT_FALSE(c.service.node_id.empty());
  EngineConfig d;
  ASSERT_TRUE(Parse({}, &d).ok());
  EXPECT_FALSE(d.service.node_id.empty());  // the hostname
}

TEST(EngineConfigTest, BadValuesAreUsageErrorsNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--listen=127.0.0.1:9k"}, "--listen"},
      {{"--listen=0.0.0.0:9500"}, "--auth-token"},  // secure default
      {{"--grpc-listen=0.0.0.0:9600"}, "--mgmt-token"},
      {{"--grpc-listen=http://x:1"}, "--grpc-listen"},
      {{"--buffer-pool=8M"}, "--buffer-pool"},
      {{"--max-connections=0"}, "--max-connections"},
      {{"--handshake-timeout-ms=10"}, "--handshake-timeout-ms"},
      {{"--idle-timeout-ms=1000"}, "--idle-timeout-ms"},
      {{"--cpu=4"}, "--cpu"},
      {{"--cpu=abc"}, "--cpu"},
      {{"--request-timeout-ms=0"}, "--request-timeout-ms"},
      {{"--rebuild-rate=100"}, "--rebuild-rate"},
      {{"--reconnect-interval-ms=50"}, "--reconnect-interval-ms"},
      {{"--create-replica=v1"}, "--create-replica"},
      {{"--create-replica=v1:1000"}, "--create-replica"},
      {{"--mgmt-token=a", "--mgmt-token-file=/nonexistent"}, "exclusive"},
      {{"--auth-token-file=/nonexistent"}, "--auth-token-file"},
      {{"--grpc-tls-cert=/c.pem"}, "--grpc-tls-key"},
      {{"--grpc-tls-client-ca=/ca.pem"}, "--grpc-tls-cert"},
      {{"--controller=http://x:1"}, "--controller"},
      {{"--controller=127.0.0.1:0"}, "--controller"},
      {{"--target-loop=shared"}, "--target-loop"},
      {{"--local-replica=yes"}, "--local-replica"},
      {{"--nbd-write-spin-us=1001"}, "--nbd-write-spin-us"},
      {{"--nbd-write-spin-us=-1"}, "--nbd-write-spin-us"},
      {{"--io-uring-defer-taskrun=1"}, "--io-uring-defer-taskrun"},
  };
  for (const auto& [args, want] : cases) {
    EngineConfig c;
    Status st = Parse(args, &c);
    EXPECT_FALSE(st.ok()) << args[0];
    EXPECT_NE(st.message().find(want), std::string::npos) << args[0] << ": " << st.ToString();
  }
  // --insecure-bind accepts the risk.
  EngineConfig c;
  EXPECT_TRUE(Parse({"--listen=0.0.0.0:9500", "--insecure-bind"}, &c).ok());
  // The membership authority's endpoint, any spelling of endpoint.h.
  EngineConfig m;
  ASSERT_TRUE(Parse({"--controller=unix:///run/tandem/csi.sock"}, &m).ok());
  EXPECT_EQ(m.controller, "unix:///run/tandem/csi.sock");
  ASSERT_TRUE(Parse({"--controller=tcp://10.0.0.1:9700"}, &m).ok());
  EXPECT_TRUE(Parse({}, &m).ok() && m.controller.empty());
  // Where the targets run: the replica server's loop unless told.
  EngineConfig loop;
  ASSERT_TRUE(Parse({}, &loop).ok());
  EXPECT_TRUE(loop.targets_on_server_loop);
  ASSERT_TRUE(Parse({"--target-loop=server"}, &loop).ok());
  EXPECT_TRUE(loop.targets_on_server_loop);
  ASSERT_TRUE(Parse({"--target-loop=own"}, &loop).ok());
  EXPECT_FALSE(loop.targets_on_server_loop);
  EngineConfig local;
  ASSERT_TRUE(Parse({}, &local).ok());
  EXPECT_TRUE(local.local_replica);
  ASSERT_TRUE(Parse({"--local-replica=off"}, &local).ok());
  EXPECT_FALSE(local.local_replica);
  // The NBD WRITE payload spin: off unless told, 0..1000 µs.
  EngineConfig spin;
  ASSERT_TRUE(Parse({}, &spin).ok());
  EXPECT_EQ(spin.nbd_write_spin_us, 0u);
  ASSERT_TRUE(Parse({"--nbd-write-spin-us=1000"}, &spin).ok());
  EXPECT_EQ(spin.nbd_write_spin_us, 1000u);
  // The io_uring ring kind: COOP_TASKRUN unless asked.
  EngineConfig ring;
  ASSERT_TRUE(Parse({}, &ring).ok());
  EXPECT_FALSE(ring.backend_options.single_issuer);
  ASSERT_TRUE(Parse({"--io-uring-defer-taskrun=on"}, &ring).ok());
  EXPECT_TRUE(ring.backend_options.single_issuer);
}

// --target-threads: plain decimal 1..64, default 1 (today's single loop).
TEST(EngineConfigTest, TargetThreadsAreOneToSixtyFour) {
  EngineConfig c;
  ASSERT_TRUE(Parse({}, &c).ok());
  EXPECT_EQ(c.target_threads, 1u);
  for (const auto& [text, want] :
       std::vector<std::pair<std::string, uint32_t>>{{"1", 1}, {"2", 2}, {"64", 64}, {"007", 7}}) {
    EngineConfig t;
    Status st = Parse({"--target-threads=" + text}, &t);
    ASSERT_TRUE(st.ok()) << text << ": " << st.ToString();
    EXPECT_EQ(t.target_threads, want) << text;
  }
  for (const char* bad : {"0", "65", "1000", "", "-1", "+2", "2x", "1.5", "abc", "2K", " 2"}) {
    EngineConfig t;
    Status st = Parse({std::string("--target-threads=") + bad}, &t);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_NE(st.message().find("--target-threads"), std::string::npos)
        << "'" << bad << "': " << st.ToString();
    EXPECT_EQ(t.target_threads, 1u) << "'" << bad << "' changed the config";
  }
}

TEST(EngineConfigTest, TokensComeFromFilesWithoutTheirNewline) {
  char tmpl[] = "/tmp/tandem_engine_flags.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  { std::ofstream(dir + "/mgmt") << "m-tok\n"; }
  { std::ofstream(dir + "/auth") << "a-tok\r\n"; }
  EngineConfig c;
  Status st =
      Parse({"--mgmt-token-file=" + dir + "/mgmt", "--auth-token-file=" + dir + "/auth"}, &c);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(c.service.mgmt_token, "m-tok");
  EXPECT_EQ(c.server.auth_token, "a-tok");
}

}  // namespace
}  // namespace tandem::service

// NbdServer end to end: the server runs on an EventLoop thread over a
// MemoryBlockDevice and is driven by the real Debian clients (nbdinfo,
// nbdcopy, qemu-img, fio's nbd engine) and by a raw-socket client for the
// handshake and bad-input cases. A test that needs a missing tool binary is
// skipped with the reason.

#include "replica-engine/frontend/nbd_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "replica-engine/frontend/nbd_protocol.h"
#include "tests/support/memory_block_device.h"
#include "tests/support/nbd_raw_client.h"
#include "tests/support/nbd_server_fixture.h"

namespace tandem::frontend {
namespace {

using namespace nbd;  // NOLINT: protocol constants
using testing::MemoryBlockDevice;
using testing::MemoryBlockDeviceOptions;
using testing::RawClient;

constexpr const char* kExport = "vol";

bool HaveTool(const std::string& name) {
  std::string cmd = "command -v " + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

#define REQUIRE_TOOL(name) \
  if (!HaveTool(name)) GTEST_SKIP() << name << " is not installed (Debian package needed)"

// Runs `cmd` through the shell with a hard time limit; returns the exit code
// and appends stdout+stderr to *out.
int RunTool(const std::string& cmd, std::string* out, int timeout_s = 120) {
  std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " " + cmd + " 2>&1";
  FILE* f = popen(full.c_str(), "r");
  if (f == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

void WriteRandomFile(const std::string& path, size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> data(size / 8);
  for (auto& w : data) w = rng();
  // Leave some all-zero stretches so zero detection (WRITE_ZEROES/TRIM) in
  // the clients is exercised too.
  for (size_t i = 0; i + 8192 <= data.size(); i += 65536) {
    std::fill(data.begin() + i, data.begin() + i + 8192, 0);
  }
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(size));
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + i / 4096);
  return v;
}

class NbdServerTest : public testing::NbdServerFixture {
 protected:
  void SetUp() override {
    NbdServerFixture::SetUp();
    uri_ = "nbd+unix:///" + std::string(kExport) + "?socket=" + socket_;
  }

  std::string uri_;
};

// --- Real clients -------------------------------------------------------------

TEST_F(NbdServerTest, NbdinfoReportsExportSizeAndBlockSizes) {
  REQUIRE_TOOL("nbdinfo");
  MemoryBlockDeviceOptions dev;
  dev.size = 48ull << 20;
  dev.max_io_size = 256 << 10;
  StartServer(dev);
  std::string out;
  ASSERT_EQ(RunTool("nbdinfo --json '" + uri_ + "'", &out), 0) << out;
  EXPECT_NE(out.find("\"export-size\": " + std::to_string(48ull << 20)), std::string::npos) << out;
  EXPECT_NE(out.find("\"block_size_minimum\": 512"), std::string::npos) << out;
  EXPECT_NE(out.find("\"block_size_preferred\": 4096"), std::string::npos) << out;
  EXPECT_NE(out.find("\"block_size_maximum\": " + std::to_string(256 << 10)), std::string::npos)
      << out;
  EXPECT_NE(out.find("\"can_multi_conn\": true"), std::string::npos) << out;
  EXPECT_NE(out.find("\"can_fua\": true"), std::string::npos) << out;
}

TEST_F(NbdServerTest, NbdinfoListsTheExport) {
  REQUIRE_TOOL("nbdinfo");
  StartServer();
  std::string out;
  ASSERT_EQ(RunTool("nbdinfo --list --json 'nbd+unix://?socket=" + socket_ + "'", &out), 0) << out;
  EXPECT_NE(out.find("\"export-name\": \"vol\""), std::string::npos) << out;
}

TEST_F(NbdServerTest, NbdinfoOverTcpOnLoopback) {
  REQUIRE_TOOL("nbdinfo");
  NbdServerOptions opts;
  opts.tcp_address = "127.0.0.1:0";
  StartServer({}, opts);
  ASSERT_NE(server_->tcp_port(), 0);
  std::string out;
  std::string uri = "nbd://127.0.0.1:" + std::to_string(server_->tcp_port()) + "/vol";
  ASSERT_EQ(RunTool("nbdinfo --size '" + uri + "'", &out), 0) << out;
  EXPECT_EQ(std::stoull(out), 64ull << 20) << out;
}

TEST_F(NbdServerTest, QemuImgConvertRoundTripsByteForByte) {
  REQUIRE_TOOL("qemu-img");
  MemoryBlockDeviceOptions dev;
  dev.size = 32ull << 20;
  StartServer(dev);
  std::string src = dir_ + "/src.img";
  std::string dst = dir_ + "/dst.img";
  WriteRandomFile(src, dev.size, 1);
  std::string out;
  ASSERT_EQ(RunTool("qemu-img convert -n -f raw -O raw '" + src + "' '" + uri_ + "'", &out), 0)
      << out;
  ASSERT_EQ(RunTool("qemu-img convert -f raw -O raw '" + uri_ + "' '" + dst + "'", &out), 0) << out;
  auto a = ReadFile(src);
  auto b = ReadFile(dst);
  ASSERT_EQ(a.size(), dev.size);
  ASSERT_EQ(b.size(), dev.size);
  EXPECT_TRUE(a == b) << "qemu-img round trip differs";
  // And the device itself holds the file.
  std::vector<uint8_t> mem;
  OnLoop([&] { mem.assign(device_->data(), device_->data() + dev.size); });
  EXPECT_TRUE(mem == a) << "device content differs from the source file";
}

TEST_F(NbdServerTest, NbdcopyRoundTripsByteForByte) {
  REQUIRE_TOOL("nbdcopy");
  MemoryBlockDeviceOptions dev;
  dev.size = 32ull << 20;
  StartServer(dev);
  std::string src = dir_ + "/src.img";
  std::string dst = dir_ + "/dst.img";
  WriteRandomFile(src, dev.size, 2);
  std::string out;
  ASSERT_EQ(RunTool("nbdcopy --flush '" + src + "' '" + uri_ + "'", &out), 0) << out;
  ASSERT_EQ(RunTool("nbdcopy '" + uri_ + "' '" + dst + "'", &out), 0) << out;
  EXPECT_TRUE(ReadFile(src) == ReadFile(dst)) << "nbdcopy round trip differs";
  uint64_t flushes = 0;
  OnLoop([&] { flushes = device_->stats().flushes; });
  EXPECT_GE(flushes, 1u) << "nbdcopy --flush did not reach the device";
}

TEST_F(NbdServerTest, NbdcopyWithFourConnectionsRoundTrips) {
  REQUIRE_TOOL("nbdcopy");
  MemoryBlockDeviceOptions dev;
  dev.size = 32ull << 20;
  dev.max_io_size = 128 << 10;
  StartServer(dev);
  std::string src = dir_ + "/src.img";
  std::string dst = dir_ + "/dst.img";
  WriteRandomFile(src, dev.size, 3);
  std::string out;
  ASSERT_EQ(
      RunTool("nbdcopy --connections=4 --threads=4 --flush '" + src + "' '" + uri_ + "'", &out), 0)
      << out;
  NbdServerStats s = Stats();
  // CAN_MULTI_CONN is advertised, so nbdcopy really opened several.
  EXPECT_GE(s.connections_accepted, 4u);
  ASSERT_EQ(RunTool("nbdcopy --connections=4 --threads=4 '" + uri_ + "' '" + dst + "'", &out), 0)
      << out;
  EXPECT_TRUE(ReadFile(src) == ReadFile(dst)) << "multi-connection round trip differs";
  EXPECT_EQ(Stats().errors, 0u);
}

TEST_F(NbdServerTest, FioRandwriteVerifyPasses) {
  REQUIRE_TOOL("fio");
  StartServer();
  std::string out;
  int rc = RunTool("fio --name=nbdverify --ioengine=nbd --uri='" + uri_ +
                       "' --rw=randwrite --bs=4k --iodepth=32 --size=16m --verify=crc32c"
                       " --do_verify=1 --verify_fatal=1 --output-format=terse",
                   &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find("verify:"), std::string::npos) << out;
  EXPECT_EQ(Stats().errors, 0u);
}

TEST_F(NbdServerTest, FioLargeBlocksAreSplitAndVerify) {
  REQUIRE_TOOL("fio");
  // fio ignores the advertised maximum: 1 MiB requests against a 64 KiB
  // device limit must be split by the server.
  MemoryBlockDeviceOptions dev;
  dev.max_io_size = 64 << 10;
  StartServer(dev);
  std::string out;
  int rc = RunTool("fio --name=nbdsplit --ioengine=nbd --uri='" + uri_ +
                       "' --rw=randwrite --bs=1m --iodepth=8 --size=32m --verify=crc32c"
                       " --do_verify=1 --verify_fatal=1 --output-format=terse",
                   &out);
  ASSERT_EQ(rc, 0) << out;
  uint32_t largest = 0;
  OnLoop([&] { largest = device_->stats().largest_io; });
  EXPECT_LE(largest, 64u << 10);
  EXPECT_EQ(Stats().errors, 0u);
}

// --- Handshake ----------------------------------------------------------------

TEST_F(NbdServerTest, GarbageOptionMagicClosesOnlyThatConnection) {
  StartServer();
  RawClient good(socket_);
  ASSERT_TRUE(good.Connect());
  RawClient bad(socket_);
  ASSERT_TRUE(bad.Hello());
  // The server may close as soon as it has the 16-byte header, before the
  // option data is sent: the send may fail; the close is what matters.
  (void)bad.SendOption(kOptGo, "garbage", 0, 0x0123456789abcdefull);
  EXPECT_TRUE(bad.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
  // The connection opened before keeps working, and new ones are accepted.
  auto data = Pattern(4096, 1);
  EXPECT_EQ(good.Write(0, data), 0u);
  ExpectStillServing();
}

TEST_F(NbdServerTest, GarbageInsteadOfHandshakeCloses) {
  StartServer();
  RawClient c(socket_);
  uint8_t g[kGreetingSize];
  ASSERT_TRUE(c.Recv(g, sizeof(g)));
  std::string junk(64, '\xff');
  ASSERT_TRUE(c.Send(junk.data(), junk.size()));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
  ExpectStillServing();
}

TEST_F(NbdServerTest, UnknownOptionGetsErrUnsupAndHandshakeContinues) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello());
  ASSERT_TRUE(c.SendOption(4242, "abc"));
  RawClient::OptReply r;
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.option, 4242u);
  EXPECT_EQ(r.type, kRepErrUnsup);
  ASSERT_TRUE(c.SendOption(kOptStructuredReply, ""));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepErrUnsup);
  EXPECT_EQ(c.Go(kExport), kRepAck);
  EXPECT_EQ(Stats().connections_closed_bad_input, 0u);
}

TEST_F(NbdServerTest, OversizedOptionLengthCloses) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello());
  uint8_t h[kOptionHeaderSize];
  PutBe64(h, kIHaveOpt);
  PutBe32(h + 8, kOptGo);
  PutBe32(h + 12, 1u << 30);
  ASSERT_TRUE(c.Send(h, sizeof(h)));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
  ExpectStillServing();
}

TEST_F(NbdServerTest, UnknownClientFlagsClose) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello(1u << 7));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
}

TEST_F(NbdServerTest, UnknownExportGetsErrUnknownAndEmptyNameIsDefault) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello());
  EXPECT_EQ(c.Go("no-such-volume"), kRepErrUnknown);
  ASSERT_TRUE(c.SendOption(kOptInfo, RawClient::InfoData("other", {})));
  RawClient::OptReply r;
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepErrUnknown);
  uint64_t size = 0;
  uint16_t flags = 0;
  EXPECT_EQ(c.Go("", &size, &flags), kRepAck);
  EXPECT_EQ(size, 64ull << 20);
  EXPECT_EQ(flags, kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxSendWriteZeroes |
                       kTxCanMultiConn);
}

TEST_F(NbdServerTest, InfoReportsExportBlockSizesAndName) {
  MemoryBlockDeviceOptions dev;
  dev.block_size = 4096;
  dev.max_io_size = 512 << 10;
  StartServer(dev);
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello());
  ASSERT_TRUE(c.SendOption(kOptInfo, RawClient::InfoData(kExport, {kInfoBlockSize, kInfoName})));
  bool saw_export = false, saw_bs = false, saw_name = false;
  for (;;) {
    RawClient::OptReply r;
    ASSERT_TRUE(c.ReadOptReply(&r));
    EXPECT_EQ(r.option, kOptInfo);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepInfo);
    auto* b = reinterpret_cast<const uint8_t*>(r.data.data());
    uint16_t type = GetBe16(b);
    if (type == kInfoExport) {
      saw_export = true;
      EXPECT_EQ(GetBe64(b + 2), 64ull << 20);
    } else if (type == kInfoBlockSize) {
      saw_bs = true;
      EXPECT_EQ(GetBe32(b + 2), 4096u);
      EXPECT_EQ(GetBe32(b + 6), 4096u);
      EXPECT_EQ(GetBe32(b + 10), 512u << 10);
    } else if (type == kInfoName) {
      saw_name = true;
      EXPECT_EQ(r.data.substr(2), kExport);
    }
  }
  EXPECT_TRUE(saw_export && saw_bs && saw_name);
  // INFO does not enter transmission: LIST still works.
  ASSERT_TRUE(c.SendOption(kOptList, ""));
  RawClient::OptReply r;
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepServer);
  EXPECT_EQ(r.data.substr(4), kExport);
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepAck);
  ASSERT_TRUE(c.SendOption(kOptList, "x"));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepErrInvalid);
  // Malformed INFO data.
  ASSERT_TRUE(c.SendOption(kOptGo, std::string("\0\0\0\x09vol", 7)));
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepErrInvalid);
}

TEST_F(NbdServerTest, ExportNameHonoursNoZeroes) {
  StartServer();
  for (bool no_zeroes : {false, true}) {
    RawClient c(socket_);
    ASSERT_TRUE(c.Hello(kClientFlagFixedNewstyle | (no_zeroes ? kClientFlagNoZeroes : 0)));
    ASSERT_TRUE(c.SendOption(kOptExportName, kExport));
    std::vector<uint8_t> reply(10 + (no_zeroes ? 0 : kExportNameReplyZeroes));
    ASSERT_TRUE(c.Recv(reply.data(), reply.size()));
    EXPECT_EQ(GetBe64(reply.data()), 64ull << 20);
    // Transmission works right after the reply (so it had no extra bytes).
    auto data = Pattern(512, 9);
    EXPECT_EQ(c.Write(0, data), 0u);
  }
  RawClient unknown(socket_);
  ASSERT_TRUE(unknown.Hello());
  ASSERT_TRUE(unknown.SendOption(kOptExportName, "nope"));
  EXPECT_TRUE(unknown.WaitClosed());
}

TEST_F(NbdServerTest, StalledHandshakeTimesOut) {
  NbdServerOptions opts;
  opts.handshake_timeout_ms = 500;
  StartServer({}, opts);
  RawClient idle(socket_);
  ASSERT_TRUE(idle.connected());
  RawClient half(socket_);
  ASSERT_TRUE(half.Hello());
  RawClient done(socket_);
  ASSERT_TRUE(done.Connect());
  EXPECT_TRUE(idle.WaitClosed());
  EXPECT_TRUE(half.WaitClosed());
  // A connection in transmission is not affected.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  auto data = Pattern(4096, 3);
  EXPECT_EQ(done.Write(0, data), 0u);
  ASSERT_TRUE(WaitFor([&] { return server_->connection_count() == 1; }));
}

TEST_F(NbdServerTest, OptionsSentWithoutWaitingAreAnsweredInOrder) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello());
  // Clients must wait for each reply; one that does not is served one option
  // at a time (the server stops reading while a reply is unsent).
  constexpr int kN = 200;
  std::string burst;
  for (int i = 0; i < kN; ++i) {
    uint8_t h[kOptionHeaderSize];
    PutBe64(h, kIHaveOpt);
    PutBe32(h + 8, kOptList);
    PutBe32(h + 12, 0);
    burst.append(reinterpret_cast<char*>(h), sizeof(h));
  }
  ASSERT_TRUE(c.Send(burst.data(), burst.size()));
  for (int i = 0; i < kN; ++i) {
    RawClient::OptReply r;
    ASSERT_TRUE(c.ReadOptReply(&r)) << i;
    ASSERT_EQ(r.type, kRepServer);
    ASSERT_TRUE(c.ReadOptReply(&r)) << i;
    ASSERT_EQ(r.type, kRepAck);
  }
  EXPECT_EQ(c.Go(kExport), kRepAck);
}

TEST_F(NbdServerTest, AbortIsAcknowledgedThenClosed) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Hello());
  ASSERT_TRUE(c.SendOption(kOptAbort, ""));
  RawClient::OptReply r;
  ASSERT_TRUE(c.ReadOptReply(&r));
  EXPECT_EQ(r.type, kRepAck);
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 0u);
}

// --- Transmission -------------------------------------------------------------

TEST_F(NbdServerTest, RequestWithBadMagicClosesOnlyThatConnection) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  ASSERT_TRUE(c.SendRequest(kCmdRead, 0, 4096, 1, 0, nullptr, 0xdeadbeef));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
  ExpectStillServing();
}

TEST_F(NbdServerTest, OversizedWritePayloadCloses) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  ASSERT_TRUE(c.SendRequest(kCmdWrite, 0, kMaxPayload + 4096, 1));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
  ExpectStillServing();
}

TEST_F(NbdServerTest, WriteBeyondEndGetsEnospcAndConnectionStays) {
  MemoryBlockDeviceOptions dev;
  dev.size = 1 << 20;
  StartServer(dev);
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  // The payload is consumed and discarded: the next request parses cleanly.
  EXPECT_EQ(c.Write(dev.size - 4096, Pattern(8192, 3)), kErrNoSpc);
  EXPECT_EQ(c.Write(dev.size, Pattern(64 << 10, 4)), kErrNoSpc);
  std::vector<uint8_t> back;
  EXPECT_EQ(c.Read(dev.size - 4096, 8192, &back), kErrInval);
  EXPECT_EQ(c.Simple(kCmdTrim, dev.size, 4096), kErrInval);
  EXPECT_EQ(c.Simple(kCmdWriteZeroes, dev.size - 512, 1024), kErrNoSpc);
  // Misaligned, zero-length, unknown command, unsupported flag.
  EXPECT_EQ(c.Read(100, 512, &back), kErrInval);
  EXPECT_EQ(c.Write(0, Pattern(100, 5)), kErrInval);
  EXPECT_EQ(c.Read(0, 0, &back), kErrInval);
  EXPECT_EQ(c.Simple(kCmdCache, 0, 4096), kErrInval);
  EXPECT_EQ(c.Simple(kCmdBlockStatus, 0, 4096), kErrInval);
  EXPECT_EQ(c.Read(0, 4096, &back), 0u);
  auto data = Pattern(4096, 6);
  EXPECT_EQ(c.Write(dev.size - 4096, data), 0u);
  EXPECT_EQ(c.Read(dev.size - 4096, 4096, &back), 0u);
  EXPECT_EQ(back, data);
  NbdServerStats s = Stats();
  EXPECT_EQ(s.connections_closed_bad_input, 0u);
  EXPECT_EQ(s.errors, 10u);
}

TEST_F(NbdServerTest, DeviceErrorsMapToNbdErrors) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  struct Case {
    StatusCode code;
    uint32_t write_err;
    uint32_t read_err;
  };
  for (Case k :
       {Case{StatusCode::kInternal, kErrIo, kErrIo}, Case{StatusCode::kUnavailable, kErrIo, kErrIo},
        Case{StatusCode::kResourceExhausted, kErrNoSpc, kErrNoSpc},
        Case{StatusCode::kInvalidArgument, kErrInval, kErrInval},
        Case{StatusCode::kOutOfRange, kErrNoSpc, kErrInval}}) {
    OnLoop([&] { device_->InjectError(target::BlockOp::kWrite, k.code, 1); });
    EXPECT_EQ(c.Write(0, Pattern(4096, 1)), k.write_err) << StatusCodeName(k.code);
    OnLoop([&] { device_->InjectError(target::BlockOp::kRead, k.code, 1); });
    std::vector<uint8_t> back;
    EXPECT_EQ(c.Read(0, 4096, &back), k.read_err) << StatusCodeName(k.code);
  }
  OnLoop([&] { device_->InjectError(target::BlockOp::kFlush, StatusCode::kInternal, 1); });
  EXPECT_EQ(c.Simple(kCmdFlush, 0, 0), kErrIo);
  EXPECT_EQ(c.Simple(kCmdFlush, 0, 0), 0u);
  // A failed read sends no payload: the stream stays in sync.
  std::vector<uint8_t> back;
  EXPECT_EQ(c.Read(0, 4096, &back), 0u);
}

TEST_F(NbdServerTest, FuaFlushTrimAndWriteZeroesReachTheDevice) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  auto data = Pattern(8192, 7);
  EXPECT_EQ(c.Write(0, data, kCmdFlagFua), 0u);
  EXPECT_EQ(c.Simple(kCmdFlush, 0, 0), 0u);
  EXPECT_EQ(c.Simple(kCmdWriteZeroes, 0, 4096, kCmdFlagNoHole | kCmdFlagFua), 0u);
  EXPECT_EQ(c.Simple(kCmdTrim, 4096, 4096), 0u);
  std::vector<uint8_t> back;
  EXPECT_EQ(c.Read(0, 8192, &back), 0u);
  EXPECT_EQ(back, std::vector<uint8_t>(8192, 0));
  testing::MemoryBlockDeviceStats s;
  OnLoop([&] { s = device_->stats(); });
  EXPECT_EQ(s.fua_writes, 1u);
  EXPECT_EQ(s.flushes, 1u);
  EXPECT_EQ(s.write_zeroes, 1u);
  EXPECT_EQ(s.trims, 1u);
}

TEST_F(NbdServerTest, RequestsAboveMaxIoAreSplit) {
  MemoryBlockDeviceOptions dev;
  dev.max_io_size = 64 << 10;
  StartServer(dev);
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  auto data = Pattern(1 << 20, 11);
  EXPECT_EQ(c.Write(4096, data), 0u);
  std::vector<uint8_t> back;
  EXPECT_EQ(c.Read(4096, 1 << 20, &back), 0u);
  EXPECT_EQ(back, data);
  // A 32 MiB read (the protocol limit) works too.
  EXPECT_EQ(c.Read(0, kMaxPayload, &back), 0u);
  EXPECT_EQ(back.size(), kMaxPayload);
  EXPECT_EQ(c.Simple(kCmdWriteZeroes, 0, 8 << 20), 0u);
  testing::MemoryBlockDeviceStats s;
  OnLoop([&] { s = device_->stats(); });
  EXPECT_LE(s.largest_io, 64u << 10);
  EXPECT_GE(s.writes, 16u);
  EXPECT_GE(s.write_zeroes, 128u);
}

TEST_F(NbdServerTest, PipelinedRepliesComeInCompletionOrder) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  // Hold completions, queue 32 writes, then complete them newest first.
  OnLoop([&] {
    device_->Pause();
    device_->SetReverseOrder(true);
  });
  constexpr int kN = 32;
  for (int i = 0; i < kN; ++i) {
    auto data = Pattern(4096, static_cast<uint8_t>(i));
    ASSERT_TRUE(
        c.SendRequest(kCmdWrite, static_cast<uint64_t>(i) * 4096, 4096, 1000 + i, 0, data.data()));
  }
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() == kN; }));
  OnLoop([&] { device_->Resume(); });
  std::vector<uint64_t> cookies;
  for (int i = 0; i < kN; ++i) {
    uint32_t err;
    uint64_t cookie;
    ASSERT_TRUE(c.ReadReply(&err, &cookie));
    EXPECT_EQ(err, 0u);
    cookies.push_back(cookie);
  }
  EXPECT_EQ(cookies.front(), 1000u + kN - 1);
  EXPECT_EQ(cookies.back(), 1000u);
  for (int i = 0; i < kN; ++i) {
    std::vector<uint8_t> back;
    ASSERT_EQ(c.Read(static_cast<uint64_t>(i) * 4096, 4096, &back), 0u);
    EXPECT_EQ(back, Pattern(4096, static_cast<uint8_t>(i)));
  }
}

TEST_F(NbdServerTest, ExhaustedSlotsStopReadingUntilRequestsComplete) {
  NbdServerOptions opts;
  opts.max_requests_per_connection = 4;
  StartServer({}, opts);
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  OnLoop([&] { device_->Pause(); });
  constexpr int kN = 40;
  for (int i = 0; i < kN; ++i) ASSERT_TRUE(c.SendRequest(kCmdRead, 0, 4096, i));
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() == 4; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  uint32_t inflight = 0;
  OnLoop([&] { inflight = device_->inflight(); });
  EXPECT_EQ(inflight, 4u) << "more requests than slots reached the device";
  OnLoop([&] { device_->Resume(); });
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < kN; ++i) {
    uint32_t err;
    uint64_t cookie;
    ASSERT_TRUE(c.ReadReply(&err, &cookie)) << i;
    ASSERT_EQ(err, 0u);
    ASSERT_TRUE(c.Recv(buf.data(), buf.size()));
  }
  uint64_t max_inflight = 0;
  OnLoop([&] { max_inflight = device_->stats().max_inflight; });
  EXPECT_LE(max_inflight, 4u);
}

TEST_F(NbdServerTest, RepliesBeyondTheSocketBufferArriveWhenTheClientReadsLate) {
  // 16 MiB of READ replies queued while the client reads nothing: the
  // server's sends hit EAGAIN (write interest is armed only then) and every
  // byte must still arrive, in order, once the client starts reading.
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  constexpr uint32_t kLen = 1u << 20;
  constexpr int kN = 16;
  for (int i = 0; i < 4; ++i) {
    auto data = Pattern(kLen, static_cast<uint8_t>(i + 1));
    ASSERT_TRUE(
        c.SendRequest(kCmdWrite, static_cast<uint64_t>(i) * kLen, kLen, 500 + i, 0, data.data()));
    uint32_t err;
    uint64_t cookie;
    ASSERT_TRUE(c.ReadReply(&err, &cookie));
    ASSERT_EQ(err, 0u);
  }
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(c.SendRequest(kCmdRead, static_cast<uint64_t>(i % 4) * kLen, kLen, i));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::vector<uint8_t> buf(kLen);
  for (int i = 0; i < kN; ++i) {
    uint32_t err;
    uint64_t cookie;
    ASSERT_TRUE(c.ReadReply(&err, &cookie)) << i;
    ASSERT_EQ(err, 0u);
    ASSERT_TRUE(c.Recv(buf.data(), buf.size())) << i;
    EXPECT_EQ(buf, Pattern(kLen, static_cast<uint8_t>(cookie % 4 + 1))) << "reply " << cookie;
  }
  // The connection still serves requests after the backpressure episode.
  std::vector<uint8_t> back;
  ASSERT_EQ(c.Read(0, 4096, &back), 0u);
  auto first = Pattern(kLen, 1);
  first.resize(4096);
  EXPECT_EQ(back, first);
}

TEST_F(NbdServerTest, DiscFinishesInflightRequestsThenCloses) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  OnLoop([&] { device_->Pause(); });
  auto data = Pattern(4096, 21);
  ASSERT_TRUE(c.SendRequest(kCmdWrite, 0, 4096, 77, 0, data.data()));
  ASSERT_TRUE(c.SendRequest(kCmdDisc, 0, 0, 78));
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() == 1; }));
  OnLoop([&] { device_->Resume(); });
  uint32_t err;
  uint64_t cookie;
  ASSERT_TRUE(c.ReadReply(&err, &cookie));
  EXPECT_EQ(cookie, 77u);
  EXPECT_EQ(err, 0u);
  EXPECT_TRUE(c.WaitClosed());
  ASSERT_TRUE(WaitFor([&] { return server_->connection_count() == 0; }));
  std::vector<uint8_t> mem;
  OnLoop([&] { mem.assign(device_->data(), device_->data() + 4096); });
  EXPECT_EQ(mem, data);
}

TEST_F(NbdServerTest, ShutdownWaitsForInflightRequestsAndRemovesSocket) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  RawClient handshaking(socket_);
  ASSERT_TRUE(handshaking.Hello());
  OnLoop([&] { device_->Pause(); });
  ASSERT_TRUE(c.SendRequest(kCmdRead, 0, 4096, 5));
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() == 1; }));
  bool done = false;
  OnLoop([&] { server_->Shutdown([](void* arg) { *static_cast<bool*>(arg) = true; }, &done); });
  // Still waiting for the device; the handshake connection is gone already.
  EXPECT_TRUE(handshaking.WaitClosed());
  bool done_now = true;
  OnLoop([&] { done_now = done; });
  EXPECT_FALSE(done_now);
  struct stat st;
  EXPECT_NE(lstat(socket_.c_str(), &st), 0) << "socket file not removed";
  OnLoop([&] { device_->Resume(); });
  uint32_t err;
  uint64_t cookie;
  ASSERT_TRUE(c.ReadReply(&err, &cookie));
  EXPECT_EQ(err, 0u);
  std::vector<uint8_t> buf(4096);
  ASSERT_TRUE(c.Recv(buf.data(), buf.size()));
  EXPECT_TRUE(c.WaitClosed());
  ASSERT_TRUE(WaitFor([&] { return done; }));
  // Idempotent: a second Shutdown completes too.
  bool done2 = false;
  OnLoop([&] { server_->Shutdown([](void* arg) { *static_cast<bool*>(arg) = true; }, &done2); });
  ASSERT_TRUE(WaitFor([&] { return done2; }));
}

TEST_F(NbdServerTest, UnixSocketIsOwnerOnlyWhateverTheUmask) {
  // Issue 10: whoever can connect can read and write the volume.
  mode_t old = umask(0);
  StartServer();
  umask(old);
  struct stat st;
  ASSERT_EQ(lstat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
}

TEST_F(NbdServerTest, DescribeThroughTheExportSeam) {
  NbdServerOptions opts;
  opts.tcp_address = "127.0.0.1:0";
  StartServer({}, opts);
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  auto data = Pattern(8192, 3);
  ASSERT_EQ(c.Write(0, data), 0u);
  std::vector<uint8_t> back;
  ASSERT_EQ(c.Read(0, 4096, &back), 0u);
  ExportDescription d;
  Export* e = server_.get();
  OnLoop([&] { d = e->Describe(); });
  EXPECT_EQ(d.kind, ExportKind::kNbd);
  EXPECT_STREQ(ExportKindName(d.kind), "nbd");
  EXPECT_EQ(d.path, socket_);
  EXPECT_EQ(d.address, "127.0.0.1:" + std::to_string(server_->tcp_port()));
  EXPECT_EQ(d.counters.connections, 1u);
  EXPECT_EQ(d.counters.requests, 2u);
  EXPECT_EQ(d.counters.errors, 0u);
  EXPECT_EQ(d.counters.bytes_written, 8192u);
  EXPECT_EQ(d.counters.bytes_read, 4096u);
}

TEST_F(NbdServerTest, DestroyingServerWithInflightRequestsIsSafe) {
  StartServer();
  RawClient c(socket_);
  ASSERT_TRUE(c.Connect());
  OnLoop([&] { device_->Pause(); });
  auto data = Pattern(1 << 20, 1);
  ASSERT_TRUE(c.SendRequest(kCmdWrite, 0, 1 << 20, 1, 0, data.data()));
  ASSERT_TRUE(c.SendRequest(kCmdRead, 0, 4096, 2));
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() >= 2; }));
  OnLoop([&] { server_.reset(); });
  EXPECT_TRUE(c.WaitClosed());
  // The abandoned requests complete into memory that is still valid (ASan
  // checks), and nothing is replied.
  OnLoop([&] { device_->Resume(); });
  ASSERT_TRUE(WaitFor([&] { return device_->inflight() == 0; }));
}

TEST_F(NbdServerTest, ConnectionsAboveMaxAreRefused) {
  NbdServerOptions opts;
  opts.max_connections = 2;
  StartServer({}, opts);
  RawClient a(socket_), b(socket_);
  ASSERT_TRUE(a.Connect());
  ASSERT_TRUE(b.Connect());
  RawClient c(socket_);
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_EQ(Stats().connections_accepted, 2u);
}

TEST_F(NbdServerTest, EofMidWritePayloadIsHandled) {
  StartServer();
  {
    RawClient c(socket_);
    ASSERT_TRUE(c.Connect());
    ASSERT_TRUE(c.SendRequest(kCmdWrite, 0, 65536, 1));
    auto part = Pattern(1000, 1);
    ASSERT_TRUE(c.Send(part.data(), part.size()));
  }
  ASSERT_TRUE(WaitFor([&] { return server_->connection_count() == 0; }));
  ExpectStillServing();
}

// --- Start errors ---------------------------------------------------------------

class NbdServerStartTest : public NbdServerTest {};

TEST_F(NbdServerStartTest, BadAddressesAreRejectedNamingThem) {
  EventLoop loop;
  MemoryBlockDevice dev(&loop, {});
  {
    NbdServer s(&loop, &dev, {});
    Status st = s.Start();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  }
  {
    NbdServerOptions o;
    o.export_name = kExport;
    o.tcp_address = "127.0.0.1";
    NbdServer s(&loop, &dev, o);
    Status st = s.Start();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("127.0.0.1"), std::string::npos) << st.ToString();
  }
  {
    NbdServerOptions o;
    o.export_name = kExport;
    o.tcp_address = "127.0.0.1:99999";
    NbdServer s(&loop, &dev, o);
    EXPECT_EQ(s.Start().code(), StatusCode::kInvalidArgument);
  }
  {
    NbdServerOptions o;
    o.export_name = kExport;
    o.unix_path = dir_ + "/no/such/dir/x.sock";
    NbdServer s(&loop, &dev, o);
    Status st = s.Start();
    EXPECT_EQ(st.code(), StatusCode::kUnavailable);
    EXPECT_NE(st.message().find(o.unix_path), std::string::npos) << st.ToString();
  }
  {
    // A regular file is not deleted.
    NbdServerOptions o;
    o.export_name = kExport;
    o.unix_path = dir_ + "/regular";
    std::ofstream(o.unix_path) << "keep me";
    NbdServer s(&loop, &dev, o);
    EXPECT_EQ(s.Start().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(std::filesystem::exists(o.unix_path));
  }
  {
    // TCP port in use.
    NbdServerOptions o1;
    o1.export_name = kExport;
    o1.tcp_address = "127.0.0.1:0";
    NbdServer s1(&loop, &dev, o1);
    ASSERT_TRUE(s1.Start().ok());
    NbdServerOptions o2 = o1;
    o2.tcp_address = "127.0.0.1:" + std::to_string(s1.tcp_port());
    NbdServer s2(&loop, &dev, o2);
    Status st = s2.Start();
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  }
}

TEST_F(NbdServerStartTest, StaleSocketFileIsReplaced) {
  {
    // Leave a socket file behind, as a crashed process would.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  StartServer();
  ExpectStillServing();
}

}  // namespace
}  // namespace tandem::frontend

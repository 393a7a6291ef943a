// Per-volume secrets (issue 10, docs/protocol.md CHALLENGE): a process that
// reaches the data port without the volume's secret reads and writes nothing,
// a captured HELLO replayed on another connection is refused, the epoch
// cannot be raised without the secret, and the secret is never on the wire
// or in the log. Volumes created without one work as before.

#include <sys/stat.h>

#include <cstring>
#include <string>

#include "replica-engine/protocol/hello_proof.h"
#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

using protocol::Opcode;
using protocol::WireStatus;

constexpr const char* kSecret = "vol-s secret: 32 random bytes..";

class VolumeSecretTest : public ServerFixture {
 protected:
  void SetUp() override {
    ServerFixture::SetUp();
    replica::ReplicaConfig cfg;
    cfg.volume_id = "vol-s";
    cfg.replica_id = "r-vol-s";
    cfg.size = kVolumeSize;
    cfg.secret = kSecret;
    ASSERT_TRUE(manager_->Create(cfg).ok());
    StartServer();
  }

  client::ClientOptions SecretOptions(const std::string& secret, uint64_t epoch = 1) {
    client::ClientOptions o = Options("vol-s", epoch);
    o.secret = secret;
    return o;
  }

  // CHALLENGE on a raw connection: the nonce.
  std::string Challenge(RawPeer* p) {
    protocol::FrameHeader h;
    h.opcode = static_cast<uint8_t>(Opcode::kChallenge);
    EXPECT_TRUE(p->Send(EncodeFrame(h, "")));
    protocol::FrameHeader r;
    std::string nonce;
    EXPECT_TRUE(p->ReadFrame(&r, &nonce));
    EXPECT_EQ(r.status, WireStatus::kOk);
    EXPECT_EQ(nonce.size(), protocol::kNonceSize);
    return nonce;
  }
  std::string ProvenHello(const std::string& nonce, uint64_t epoch, const std::string& secret) {
    protocol::HelloRequest hello{epoch, "vol-s", kToken, 0x5EC};
    hello.proof = protocol::ComputeHelloProof(secret, nonce, hello);
    std::string payload;
    EXPECT_TRUE(protocol::EncodeHello(hello, &payload).ok());
    protocol::FrameHeader h;
    h.opcode = static_cast<uint8_t>(Opcode::kHello);
    h.request_id = 1;
    return EncodeFrame(h, payload);
  }
  // Sends `frames` and returns the HELLO reply's status; the connection must
  // then close unless it was OK.
  WireStatus HelloStatus(RawPeer* p, const std::string& frames) {
    EXPECT_TRUE(p->Send(frames));
    protocol::FrameHeader r;
    std::string payload;
    EXPECT_TRUE(p->ReadFrame(&r, &payload));
    if (r.status != WireStatus::kOk) {
      EXPECT_TRUE(p->WaitClosed(5000));
    }
    return r.status;
  }
};

TEST_F(VolumeSecretTest, OnlyAHolderOfTheSecretReadsAndWrites) {
  CaptureStderr log(dir_ + "/stderr.log");
  void* buf = AlignedBuffer(4096);
  std::memset(buf, 0x77, 4096);
  {
    TestListener l;
    client::ReplicaClient* c = Connect(&l, SecretOptions(kSecret));
    ASSERT_TRUE(l.connected) << l.why.ToString();
    EXPECT_EQ(Do(c, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);
    c->Close();
  }
  for (const char* secret : {"", "not the secret, but as long"}) {
    TestListener l;
    client::ReplicaClient* c = Connect(&l, SecretOptions(secret));
    EXPECT_FALSE(l.connected);
    EXPECT_EQ(l.why.code(), StatusCode::kUnauthenticated) << l.why.ToString();
    EXPECT_NE(l.why.ToString().find("AUTH_FAILED"), std::string::npos) << l.why.ToString();
    EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kUnavailable);
    EXPECT_EQ(Do(c, Opcode::kWrite, 0, 4096, buf), StatusCode::kUnavailable);
  }
  // A raw peer pipelining a WRITE behind a HELLO without proof: refused, and
  // the WRITE never reaches the disk.
  RawPeer raw;
  ASSERT_TRUE(raw.Connect(port_));
  protocol::FrameHeader w;
  w.opcode = static_cast<uint8_t>(Opcode::kWrite);
  w.request_id = 2;
  w.length = 4096;
  EXPECT_EQ(
      HelloStatus(&raw, HelloFrame("vol-s", kToken, 1) + EncodeFrame(w, std::string(4096, 'X'))),
      WireStatus::kAuthFailed);
  EXPECT_EQ(server_->GetStats().bytes_written, 4096u) << "only the holder's write";
  log.Restore();
  EXPECT_EQ(log.Count(kSecret), 0) << "the secret is never logged";
  EXPECT_GE(log.Count("without a valid proof"), 3);
  std::free(buf);
}

TEST_F(VolumeSecretTest, ReplayedHelloIsRefusedAndTheEpochNeedsTheSecret) {
  RawPeer first;
  ASSERT_TRUE(first.Connect(port_));
  const std::string captured = ProvenHello(Challenge(&first), 3, kSecret);
  EXPECT_EQ(captured.find(kSecret), std::string::npos) << "the secret is not on the wire";
  EXPECT_EQ(HelloStatus(&first, captured), WireStatus::kOk);
  first.Close();

  RawPeer replay;  // a new connection gets a new nonce
  ASSERT_TRUE(replay.Connect(port_));
  (void)Challenge(&replay);
  EXPECT_EQ(HelloStatus(&replay, captured), WireStatus::kAuthFailed);
  RawPeer no_challenge;
  ASSERT_TRUE(no_challenge.Connect(port_));
  EXPECT_EQ(HelloStatus(&no_challenge, captured), WireStatus::kAuthFailed);

  // Epoch poisoning with a wrong secret changes nothing.
  RawPeer poison;
  ASSERT_TRUE(poison.Connect(port_));
  EXPECT_EQ(HelloStatus(&poison, ProvenHello(Challenge(&poison), ~0ull, "a guessed secret, wrong")),
            WireStatus::kAuthFailed);
  auto r = manager_->Get("vol-s");
  ASSERT_TRUE(r.ok());
  (void)server_->GetStats();  // barrier: the loop handled everything above
  EXPECT_EQ((*r)->metadata().highest_epoch, 3u);

  // A second CHALLENGE on one connection is refused.
  RawPeer twice;
  ASSERT_TRUE(twice.Connect(port_));
  (void)Challenge(&twice);
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kChallenge);
  EXPECT_EQ(HelloStatus(&twice, EncodeFrame(h, "")), WireStatus::kInvalid);
}

TEST_F(VolumeSecretTest, SecretIsPersistedOwnerOnlyAndVolumesWithoutOneWorkAsBefore) {
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/replicas/vol-s/secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  server_->Stop();
  server_.reset();
  ASSERT_TRUE(manager_->CloseAll().ok());
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
  ASSERT_TRUE(manager_->LoadAll().ok());
  StartServer();
  TestListener l;
  Connect(&l, SecretOptions(kSecret));
  EXPECT_TRUE(l.connected) << "the secret survives a restart: " << l.why.ToString();
  TestListener bad;
  Connect(&bad, SecretOptions(""));
  EXPECT_EQ(bad.why.code(), StatusCode::kUnauthenticated);
  // vol-1 has no secret: a target without one connects as before.
  TestListener plain;
  client::ReplicaClient* c = Connect(&plain, Options("vol-1"));
  ASSERT_TRUE(plain.connected) << plain.why.ToString();
  void* buf = AlignedBuffer(4096);
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  std::free(buf);
}

}  // namespace
}  // namespace tandem::server::testing

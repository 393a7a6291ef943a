// The HELLO proof (docs/protocol.md, CHALLENGE): the documented byte layout
// (a vector computed independently with Python's hmac), what it binds, and
// the HELLO payload carrying it.

#include "replica-engine/protocol/hello_proof.h"

#include <string>

#include "gtest/gtest.h"

namespace tandem::protocol {
namespace {

std::string Hex(const std::string& b) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

std::string Nonce() {
  std::string n;
  for (int i = 0; i < 32; ++i) n += static_cast<char>(i);
  return n;
}

constexpr const char* kSecret = "0123456789abcdef-volume-secret";

TEST(HelloProofTest, MatchesTheDocumentedLayout) {
  // python3: hmac.new(secret, nonce + pack('<H', 5) + b'vol-1' +
  //          pack('<QQ', 7, 0x1122334455667788), sha256)
  HelloRequest h{7, "vol-1", "", 0x1122334455667788ull};
  EXPECT_EQ(Hex(ComputeHelloProof(kSecret, Nonce(), h)),
            "8f53e1aacd6b92deb214e35743bf442129c861eb45c5e51bd2caef30a35de4c8");
}

TEST(HelloProofTest, BindsSecretNonceVolumeEpochAndTarget) {
  HelloRequest h{7, "vol-1", "", 42};
  h.proof = ComputeHelloProof(kSecret, Nonce(), h);
  EXPECT_TRUE(VerifyHelloProof(kSecret, Nonce(), h));
  EXPECT_FALSE(VerifyHelloProof("another-secret-of-16", Nonce(), h));
  std::string other = Nonce();
  other[31] ^= 1;
  EXPECT_FALSE(VerifyHelloProof(kSecret, other, h)) << "a replay on another connection";
  for (int field = 0; field < 3; ++field) {
    HelloRequest m = h;
    if (field == 0) m.volume_id = "vol-2";
    if (field == 1) m.epoch = ~0ull;  // epoch poisoning needs the secret
    if (field == 2) m.target_id = 43;
    EXPECT_FALSE(VerifyHelloProof(kSecret, Nonce(), m)) << "field " << field;
  }
  HelloRequest none = h;
  none.proof.clear();
  EXPECT_FALSE(VerifyHelloProof(kSecret, Nonce(), none));
  EXPECT_FALSE(VerifyHelloProof("", Nonce(), h)) << "no secret proves nothing";
}

TEST(HelloProofTest, HelloCarriesTheProofAfterTheTargetId) {
  HelloRequest h{7, "vol-1", "tok", 42};
  h.proof = ComputeHelloProof(kSecret, Nonce(), h);
  std::string payload;
  ASSERT_TRUE(EncodeHello(h, &payload).ok());
  EXPECT_EQ(payload.size(), 8 + 2 + 5 + 2 + 3 + 8 + kProofSize);
  HelloRequest d;
  ASSERT_TRUE(DecodeHello(payload, &d).ok());
  EXPECT_EQ(d.proof, h.proof);
  EXPECT_EQ(d.target_id, 42u);
  // Without a proof the payload is the one an older target sends.
  h.proof.clear();
  ASSERT_TRUE(EncodeHello(h, &payload).ok());
  ASSERT_TRUE(DecodeHello(payload, &d).ok());
  EXPECT_TRUE(d.proof.empty());
  // A proof of another size is malformed.
  EXPECT_FALSE(DecodeHello(payload + std::string(31, 'x'), &d).ok());
  h.proof = "short";
  EXPECT_FALSE(EncodeHello(h, &payload).ok());
}

TEST(HelloProofTest, SecretLengthAndNonces) {
  EXPECT_TRUE(ValidateSecret("").ok());
  EXPECT_FALSE(ValidateSecret("too-short").ok());
  EXPECT_TRUE(ValidateSecret(std::string(kMinSecretLength, 's')).ok());
  EXPECT_FALSE(ValidateSecret(std::string(kMaxSecretLength + 1, 's')).ok());
  std::string a, b;
  ASSERT_TRUE(RandomNonce(&a).ok());
  ASSERT_TRUE(RandomNonce(&b).ok());
  EXPECT_EQ(a.size(), kNonceSize);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace tandem::protocol

#include "replica-engine/protocol/hello_proof.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/coding.h"

namespace tandem::protocol {

Status ValidateSecret(std::string_view secret) {
  if (secret.empty()) return Status::Ok();
  if (secret.size() < kMinSecretLength || secret.size() > kMaxSecretLength) {
    return Status::InvalidArgument("secret must be " + std::to_string(kMinSecretLength) + " to " +
                                   std::to_string(kMaxSecretLength) + " bytes, not " +
                                   std::to_string(secret.size()));
  }
  return Status::Ok();
}

std::string ComputeHelloProof(std::string_view secret, std::string_view nonce,
                              const HelloRequest& hello) {
  std::string msg(nonce);
  uint8_t b[8];
  EncodeFixed16(b, static_cast<uint16_t>(hello.volume_id.size()));
  msg.append(reinterpret_cast<const char*>(b), 2);
  msg += hello.volume_id;
  EncodeFixed64(b, hello.epoch);
  msg.append(reinterpret_cast<const char*>(b), 8);
  EncodeFixed64(b, hello.target_id);
  msg.append(reinterpret_cast<const char*>(b), 8);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), mac, &len);
  std::string proof(reinterpret_cast<const char*>(mac), len);
  OPENSSL_cleanse(mac, sizeof(mac));
  return proof;
}

bool VerifyHelloProof(std::string_view secret, std::string_view nonce, const HelloRequest& hello) {
  if (secret.empty() || nonce.size() != kNonceSize || hello.proof.size() != kProofSize) {
    return false;
  }
  const std::string expected = ComputeHelloProof(secret, nonce, hello);
  return expected.size() == kProofSize &&
         CRYPTO_memcmp(expected.data(), hello.proof.data(), kProofSize) == 0;
}

Status RandomNonce(std::string* out) {
  out->assign(kNonceSize, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out->data()), static_cast<int>(kNonceSize)) !=
      1) {
    out->clear();
    return Status::Internal("RAND_bytes failed: no nonce for the HELLO challenge");
  }
  return Status::Ok();
}

}  // namespace tandem::protocol

#pragma once
// The HELLO proof of a volume's secret (docs/protocol.md, CHALLENGE):
//
//   proof = HMAC-SHA256(secret, nonce || u16 volume_id_len || volume_id ||
//                               u64 epoch || u64 target_id)
//
// little-endian integers, nonce = the kNonceSize bytes the replica sent in
// its CHALLENGE reply on that connection. The secret never travels; the
// nonce is fresh per connection, so a captured HELLO proves nothing on
// another one; and epoch and target id are bound, so a proof cannot be
// reused to claim a higher epoch. OpenSSL's libcrypto does the hashing.
//
// Pure functions, thread-safe; nothing here touches a socket.

#include <string>
#include <string_view>

#include "common/status.h"
#include "replica-engine/protocol/frame_codec.h"

namespace tandem::protocol {

// INVALID_ARGUMENT unless 0 (no secret) or kMinSecretLength..kMaxSecretLength
// bytes.
Status ValidateSecret(std::string_view secret);

// The proof of `hello` (its volume_id, epoch and target_id) over `nonce`
// (kNonceSize bytes), kProofSize bytes. REQUIRES: secret non-empty.
std::string ComputeHelloProof(std::string_view secret, std::string_view nonce,
                              const HelloRequest& hello);

// Whether hello.proof is the proof of `hello` over `nonce` with `secret`,
// compared in constant time (CRYPTO_memcmp). False for a missing or
// wrong-sized proof or nonce.
bool VerifyHelloProof(std::string_view secret, std::string_view nonce, const HelloRequest& hello);

// kNonceSize bytes from OpenSSL's CSPRNG; INTERNAL if it fails (it never
// hands out predictable bytes instead).
Status RandomNonce(std::string* out);

}  // namespace tandem::protocol

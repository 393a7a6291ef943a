#pragma once
// Printing protobuf messages for logs without their secrets.
//
// A field is secret when its name contains "secret", "token", "password",
// "passwd" or "credential" (case-insensitive): CSI's `secrets` maps
// (NodeStageVolumeRequest.secrets, CreateVolumeRequest.secrets, ...) and
// any *_token field. A secret string field prints as "[redacted]"; any other
// secret field (map, repeated, message, number) is left out and named in a
// trailing "[redacted: a, b]". Unknown fields are dropped too (a newer
// client's secrets could hide there). Nested messages are redacted the same
// way, at every depth. In a map<string, string> (CSI's publish_context,
// volume_context), an entry whose key names a secret keeps its key and prints
// its value as "[redacted]".

#include <cstddef>
#include <string>
#include <string_view>

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace tandem::rpc {

// Whether a field called `name` holds a secret (see above).
bool IsSecretFieldName(std::string_view name);

// The message in protobuf's one-line text format with its secrets redacted,
// cut to `max_bytes` (then ending in "...").
std::string RedactedText(const google::protobuf::Message& message, size_t max_bytes = 1024);

}  // namespace tandem::rpc

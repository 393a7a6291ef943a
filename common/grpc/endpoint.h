#pragma once
// Endpoint: where a gRPC server listens or a client connects, in the
// spellings operators and Kubernetes use.
//
//   unix:///run/tandem/engine.sock   unix socket /run/tandem/engine.sock
//   unix:/run/tandem/engine.sock     the same
//   unix://csi.sock, unix:csi.sock   unix socket csi.sock, relative to the cwd
//   tcp://127.0.0.1:9600             TCP
//   127.0.0.1:9600, [::1]:9600       TCP (HOST:PORT, split at the last ':')
//
// "unix://" followed by a path is the CSI sidecars' spelling (kubelet passes
// unix:///csi/csi.sock); gRPC's own is "unix:PATH". Ports are plain decimal
// (common/address.h ParsePort); a TCP host is a name or IPv4 address
// ([A-Za-z0-9._-]) or an IPv6 address in brackets.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tandem::rpc {

struct Endpoint {
  enum class Kind { kUnix, kTcp };
  Kind kind = Kind::kTcp;
  std::string path;   // kUnix: the socket file as given (absolute or relative)
  std::string host;   // kTcp
  uint16_t port = 0;  // kTcp; 0 (server only): the kernel picks one

  bool is_unix() const { return kind == Kind::kUnix; }
  // The address in gRPC's grammar: "unix:PATH" or "HOST:PORT".
  std::string GrpcAddress() const;
};

// The longest unix socket path the kernel takes (sizeof sockaddr_un.sun_path
// minus the NUL).
constexpr size_t kMaxUnixPathLength = 107;

// Parses `text` as above. INVALID_ARGUMENT naming the text and what is wrong
// (no socket path, a path longer than kMaxUnixPathLength, no or a bad port,
// an empty or malformed host, another scheme). Leading slashes of a unix
// path are collapsed to one ("unix:////a" is "/a"). Port 0 only when `allow_zero_port`.
Result<Endpoint> ParseEndpoint(std::string_view text, bool allow_zero_port = true);

}  // namespace tandem::rpc

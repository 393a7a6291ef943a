#include "common/grpc/endpoint.h"

#include "common/address.h"

namespace tandem::rpc {
namespace {

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

Result<Endpoint> ParseUnix(std::string_view text, std::string_view path) {
  if (path.empty()) {
    return Status::InvalidArgument("endpoint \"" + std::string(text) + "\" has no socket path");
  }
  if (path.size() > kMaxUnixPathLength) {
    return Status::InvalidArgument("endpoint \"" + std::string(text) +
                                   "\": socket path longer than " +
                                   std::to_string(kMaxUnixPathLength) + " bytes");
  }
  if (path.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("endpoint socket path contains a NUL byte");
  }
  Endpoint e;
  e.kind = Endpoint::Kind::kUnix;
  e.path = std::string(path);
  return e;
}

}  // namespace

std::string Endpoint::GrpcAddress() const {
  if (is_unix()) return "unix:" + path;
  return host + ":" + std::to_string(port);
}

Result<Endpoint> ParseEndpoint(std::string_view text, bool allow_zero_port) {
  // "unix://" first: it also starts with "unix:". Its remainder is the path
  // itself ("unix:///a" -> "/a", "unix://a" -> "a"), as the CSI sidecars read it.
  if (StartsWith(text, "unix://")) return ParseUnix(text, text.substr(7));
  if (StartsWith(text, "unix:")) return ParseUnix(text, text.substr(5));
  std::string_view hostport = text;
  if (StartsWith(text, "tcp://")) {
    hostport = text.substr(6);
  } else if (text.find("://") != std::string_view::npos) {
    return Status::InvalidArgument("endpoint \"" + std::string(text) +
                                   "\": only unix:// and tcp:// are supported");
  }
  Endpoint e;
  e.kind = Endpoint::Kind::kTcp;
  TANDEM_RETURN_IF_ERROR(
      ParseHostPort("endpoint", std::string(hostport), allow_zero_port, &e.host, &e.port));
  if (e.host.empty()) {
    return Status::InvalidArgument("endpoint \"" + std::string(text) +
                                   "\" has no host (use 0.0.0.0:PORT for every interface)");
  }
  return e;
}

}  // namespace tandem::rpc

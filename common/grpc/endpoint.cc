#include "common/grpc/endpoint.h"

#include <cctype>

#include "common/address.h"

namespace tandem::rpc {
namespace {

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool NameChar(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '-' || ch == '_';
}

// A host name or IPv4 address ([A-Za-z0-9._-]), or an IPv6 address in
// brackets ("[::1]"). Anything else (a second "tcp://", a '/', spaces)
// would make GrpcAddress() mean something else to gRPC.
bool ValidHost(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    for (char ch : host.substr(1, host.size() - 2)) {
      const bool hex =
          (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
      if (!hex && ch != ':' && ch != '.') return false;
    }
    return host.size() > 2;
  }
  for (char ch : host) {
    if (!NameChar(ch)) return false;
  }
  return true;
}

// gRPC reads "HOST:PORT" as a URI when HOST is one of its resolver schemes:
// "unix:0" is a unix socket named "0", "dns:80" a DNS name "80". Such a host
// cannot be written as a gRPC target without becoming something else.
bool IsGrpcScheme(std::string_view host) {
  std::string lower(host);
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (std::string_view scheme : {"unix", "unix-abstract", "dns", "ipv4", "ipv6", "vsock"}) {
    if (lower == scheme) return true;
  }
  return false;
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
  // "//x" is "/x" to the kernel, but "unix:" + "//x" would be a URI with
  // authority "x" to gRPC: one leading slash keeps GrpcAddress() faithful.
  while (path.size() > 1 && path[0] == '/' && path[1] == '/') path.remove_prefix(1);
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
  if (!ValidHost(e.host)) {
    return Status::InvalidArgument("endpoint \"" + std::string(text) + "\": host \"" + e.host +
                                   "\" is not a name, an IPv4 address or a bracketed IPv6 one");
  }
  if (IsGrpcScheme(e.host)) {
    return Status::InvalidArgument("endpoint \"" + std::string(text) + "\": host \"" + e.host +
                                   "\" would be read by gRPC as a URI scheme (\"" +
                                   e.GrpcAddress() + "\"); use its address instead");
  }
  return e;
}

}  // namespace tandem::rpc

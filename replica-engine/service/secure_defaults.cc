#include "replica-engine/service/secure_defaults.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace tandem::service {
namespace {

constexpr char kUnixPrefix[] = "unix:";

// The host of "HOST:PORT" (the text before the last ':').
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

// realpath(3) as a string; false (errno set) when `path` cannot be resolved.
bool RealPath(const std::string& path, std::string* out) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return false;
  *out = resolved;
  std::free(resolved);
  return true;
}

bool IsReplicaDir(const std::string& dir) {
  struct stat sb;
  return ::stat(dir.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode) &&
         ::stat((dir + "/meta").c_str(), &sb) == 0;
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  if (host.find('\0') != std::string::npos) return false;
  in_addr addr;
  if (inet_pton(AF_INET, host.c_str(), &addr) != 1) return false;
  return (ntohl(addr.s_addr) >> 24) == 127;
}

Status CheckBindAddress(const std::string& flag, const std::string& address, bool token_set,
                        const std::string& token_flag, bool insecure_bind) {
  if (address.rfind(kUnixPrefix, 0) == 0) return Status::Ok();
  if (token_set || insecure_bind || IsLoopbackHost(HostOf(address))) return Status::Ok();
  return Status::InvalidArgument(
      flag + " " + address + " is not a loopback address and " + token_flag +
      " is not set: anyone who can reach it would have full access. Set " + token_flag +
      ", bind 127.0.0.1 (or a unix socket), or pass --insecure-bind to accept the risk");
}

std::string UnprotectedWarning(bool auth_token_set, const std::string& data_address,
                               bool mgmt_token_set, const std::string& grpc_address) {
  std::string parts;
  if (!auth_token_set) {
    parts += "the data port " + data_address +
             " (no --auth-token: any client that reaches it reads and writes every replica)";
  }
  if (!mgmt_token_set) {
    if (!parts.empty()) parts += " and ";
    parts += "the management API " + grpc_address +
             " (no --mgmt-token: any caller that reaches it creates, deletes and exports volumes)";
  }
  if (parts.empty()) return std::string();
  return "WARNING: unprotected: " + parts + "; see docs/security.md";
}

Status CheckDataPath(const std::string& data_path, const std::string& volume_id,
                     const std::string& data_dir, const std::vector<std::string>& allowed_devices) {
  std::string resolved;
  if (!RealPath(data_path, &resolved)) {
    const int err = errno;
    return Status::InvalidArgument("data_path " + data_path +
                                   " cannot be resolved: " + std::strerror(err));
  }
  for (const std::string& device : allowed_devices) {
    std::string allowed;
    if (RealPath(device, &allowed) && allowed == resolved) return Status::Ok();
  }
  std::string root;
  if (RealPath(data_dir, &root)) {
    const std::string prefix = root == "/" ? root : root + "/";
    if (resolved.size() > prefix.size() && resolved.compare(0, prefix.size(), prefix) == 0) {
      const std::string rel = resolved.substr(prefix.size());
      const size_t slash = rel.find('/');
      if (slash == std::string::npos) return Status::Ok();  // a file in the data dir
      const std::string top = rel.substr(0, slash);
      const std::string rest = rel.substr(slash + 1);
      // <dir>/data and <dir>/meta* are what a replica in <dir> owns (Create
      // of a volume named <dir> would even remove a stray <dir>/data).
      if (top == volume_id || IsReplicaDir(root + "/" + top) || rest == "data" ||
          rest.rfind("meta", 0) == 0) {
        return Status::PermissionDenied("data_path " + data_path + " (" + resolved +
                                        ") is inside the replica directory " + root + "/" + top +
                                        ": a replica's files are never another's storage");
      }
      return Status::Ok();
    }
  }
  return Status::PermissionDenied("data_path " + data_path +
                                  (resolved == data_path ? "" : " (" + resolved + ")") +
                                  " is neither under the data directory " + data_dir +
                                  " nor an allowed device (tandem-engine --allowed-device=PATH)");
}

Status CheckNbdTcpAddress(const std::string& address, bool allow_remote) {
  if (allow_remote || IsLoopbackHost(HostOf(address))) return Status::Ok();
  return Status::PermissionDenied(
      "nbd_tcp_address " + address +
      " is not a loopback address: NBD has no authentication, so anyone who reaches it reads "
      "and writes the volume. Use 127.0.0.1, or start the engine with --allow-remote-nbd");
}

}  // namespace tandem::service

#include "replica-engine/api/grpc_server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <sys/stat.h>

#include <cerrno>
#include <utility>

namespace tandem::api {
namespace {

constexpr char kUnixPrefix[] = "unix:";

// Checks the address before gRPC sees it: gRPC reports a bad address only as
// "failed to bind", which hides typos like a missing port.
Status CheckAddress(const std::string& address) {
  if (address.rfind(kUnixPrefix, 0) == 0) {
    if (address.size() == sizeof(kUnixPrefix) - 1) {
      return Status::InvalidArgument("gRPC address \"" + address + "\" has no socket path");
    }
    return Status::Ok();
  }
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return Status::InvalidArgument("gRPC address \"" + address +
                                   "\" must be HOST:PORT or unix:/path");
  }
  std::string port = address.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    return Status::InvalidArgument("gRPC address \"" + address + "\" has a bad port");
  }
  return Status::Ok();
}

}  // namespace

std::string UnixSocketPath(const std::string& address) {
  if (address.rfind(kUnixPrefix, 0) != 0) return std::string();
  std::string path = address.substr(sizeof(kUnixPrefix) - 1);
  // "unix:///run/x.sock" (URI form, empty authority) is "/run/x.sock".
  if (path.rfind("//", 0) == 0) path = path.substr(2);
  return path;
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server, uint16_t port)
    : server_(std::move(server)), port_(port) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<GrpcServer>> GrpcServer::Start(const std::string& address,
                                                      grpc::Service* service) {
  TANDEM_RETURN_IF_ERROR(CheckAddress(address));
  const bool unix_socket = address.rfind(kUnixPrefix, 0) == 0;
  grpc::ServerBuilder builder;
  int selected_port = 0;
  // Management traffic only, over loopback or a unix socket (tandem-engine
  // refuses other addresses without --mgmt-token); the optional bearer token
  // (EngineService) is the access control. docs/security.md.
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service);
  // gRPC creates the socket file with 0777 & ~umask and has no option for its
  // mode: a umask of 0177 while it binds makes it 0600 from the start (no
  // window in which another user could connect), the chmod below makes sure.
  const mode_t old_umask = unix_socket ? ::umask(0177) : 0;
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (unix_socket) ::umask(old_umask);
  if (server == nullptr || selected_port == 0) {
    return Status::Unavailable("cannot listen for gRPC on " + address);
  }
  if (unix_socket) {
    const std::string path = UnixSocketPath(address);
    if (::chmod(path.c_str(), kUnixSocketMode) != 0) {
      const int err = errno;
      server->Shutdown(std::chrono::system_clock::now());
      server->Wait();
      return PosixError("chmod 0600 " + path, err);
    }
  }
  uint16_t port = unix_socket ? 0 : static_cast<uint16_t>(selected_port);
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(server), port));
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
}

}  // namespace tandem::api

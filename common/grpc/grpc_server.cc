#include "common/grpc/grpc_server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/grpc/call_log.h"
#include "common/unique_fd.h"

namespace tandem::rpc {
namespace {

// Whether a server accepts connections on the unix socket `path`.
// Non-blocking: a live server whose backlog is full answers EAGAIN instead of
// making us wait for it; only a refused connect means nobody is there.
bool SomeoneListens(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return true;  // cannot tell: do not remove it
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());  // ParseEndpoint bounds the size
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return true;
  return errno != ECONNREFUSED && errno != ENOENT;
}

// Makes `path` free for a new socket: nothing there, or a socket nobody
// answers on (a server that died without cleaning up), which is removed.
Status ClearStaleSocket(const std::string& path) {
  struct stat sb;
  if (::lstat(path.c_str(), &sb) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return PosixError("stat " + path, errno);
  }
  if (!S_ISSOCK(sb.st_mode)) {
    return Status::FailedPrecondition(path + " exists and is not a socket; not removing it");
  }
  if (SomeoneListens(path)) {
    return Status::Unavailable(path + " is in use by a running server");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return PosixError("remove stale socket " + path, errno);
  }
  return Status::Ok();
}

uint64_t InodeOf(const std::string& path) {
  struct stat sb;
  return ::lstat(path.c_str(), &sb) == 0 ? static_cast<uint64_t>(sb.st_ino) : 0;
}

}  // namespace

std::string UnixSocketPath(const std::string& endpoint) {
  Result<Endpoint> e = ParseEndpoint(endpoint);
  return e.ok() && e->is_unix() ? e->path : std::string();
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server, Endpoint endpoint, uint16_t port,
                       uint64_t socket_inode)
    : server_(std::move(server)),
      endpoint_(std::move(endpoint)),
      port_(port),
      socket_inode_(socket_inode) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<GrpcServer>> GrpcServer::Start(const std::string& endpoint,
                                                      grpc::Service* service) {
  GrpcServerOptions options;
  options.endpoint = endpoint;
  options.services = {service};
  return Start(options);
}

Result<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options) {
  // Parsed before gRPC sees it: gRPC reports a bad address only as "failed
  // to bind", which hides typos like a missing port.
  TANDEM_ASSIGN_OR_RETURN(Endpoint endpoint, ParseEndpoint(options.endpoint));
  if (options.services.empty()) return Status::InvalidArgument("gRPC server without a service");
  const bool unix_socket = endpoint.is_unix();
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                          NewServerCredentials(options.tls));
  if (unix_socket) TANDEM_RETURN_IF_ERROR(ClearStaleSocket(endpoint.path));
  grpc::ServerBuilder builder;
  int selected_port = 0;
  // Management traffic only, over loopback or a unix socket (the daemons
  // refuse other addresses without a token), or TLS; the bearer token
  // checked by each handler is the access control. docs/security.md.
  builder.AddListeningPort(endpoint.GrpcAddress(), credentials, &selected_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (grpc::Service* service : options.services) builder.RegisterService(service);
  if (options.log_calls) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(
        NewCallLogFactory(CallLogOptions{options.log_tag, options.ok_level, options.log_requests}));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  // gRPC creates the socket file with 0777 & ~umask and has no option for its
  // mode: a umask of 0177 while it binds makes it 0600 from the start (no
  // window in which another user could connect), the chmod below makes sure.
  const mode_t old_umask = unix_socket ? ::umask(0177) : 0;
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (unix_socket) ::umask(old_umask);
  if (server == nullptr || selected_port == 0) {
    return Status::Unavailable("cannot listen for gRPC on " + options.endpoint);
  }
  uint64_t inode = 0;
  if (unix_socket) {
    if (::chmod(endpoint.path.c_str(), kUnixSocketMode) != 0) {
      const int err = errno;
      server->Shutdown(std::chrono::system_clock::now());
      server->Wait();
      return PosixError("chmod 0600 " + endpoint.path, err);
    }
    inode = InodeOf(endpoint.path);
  }
  const uint16_t port = unix_socket ? 0 : static_cast<uint16_t>(selected_port);
  return std::unique_ptr<GrpcServer>(
      new GrpcServer(std::move(server), std::move(endpoint), port, inode));
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  // Only our own socket: another server may have replaced it meanwhile.
  if (socket_inode_ != 0 && InodeOf(endpoint_.path) == socket_inode_) {
    ::unlink(endpoint_.path.c_str());
  }
}

}  // namespace tandem::rpc

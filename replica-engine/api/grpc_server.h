#pragma once
// GrpcServer: one gRPC server serving one service on one address, for the
// engine daemon and the in-process tests.
//
// Addresses: "HOST:PORT" (port 0: the kernel picks one, see port()) or a unix
// socket "unix:/path/to.sock" (also "unix:///path/to.sock"), created with
// mode 0600 (kUnixSocketMode): only the engine's user can connect. Start sets
// the process umask while gRPC binds a unix socket, so it must not run while
// other threads create files whose mode matters (the engine starts it before
// any request is served). SO_REUSEPORT is off, so a second engine on a port
// in use fails to start instead of silently sharing it.
//
// Thread-safety: Shutdown() may be called from any thread, but not
// concurrently with itself or the destructor.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "common/result.h"

namespace tandem::api {

// Mode of a unix socket GrpcServer listens on.
constexpr unsigned kUnixSocketMode = 0600;

// The file of a "unix:" address ("unix:/a" and "unix:///a": "/a"); "" for
// any other address.
std::string UnixSocketPath(const std::string& address);

class GrpcServer {
 public:
  // Starts serving `service` (not owned; must outlive the server) on
  // `address`. INVALID_ARGUMENT for a malformed address, UNAVAILABLE when it
  // cannot be bound.
  static Result<std::unique_ptr<GrpcServer>> Start(const std::string& address,
                                                   grpc::Service* service);
  ~GrpcServer();  // Shutdown(0) if not yet shut down

  // The bound TCP port; 0 for a unix socket.
  uint16_t port() const { return port_; }

  // Stops accepting calls, lets running calls finish for up to `grace`, then
  // cancels the rest, and waits for the handlers to return.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, uint16_t port);

  std::unique_ptr<grpc::Server> server_;
  uint16_t port_;
  bool shut_down_ = false;
};

}  // namespace tandem::api

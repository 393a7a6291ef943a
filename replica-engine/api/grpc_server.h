#pragma once
// GrpcServer: one gRPC server serving one service on one address, for the
// engine daemon and the in-process tests.
//
// Addresses: "HOST:PORT" (port 0: the kernel picks one, see port()) or
// "unix:/path/to.sock". SO_REUSEPORT is off, so a second engine on a port in
// use fails to start instead of silently sharing it.
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

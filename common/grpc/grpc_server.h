#pragma once
// GrpcServer: one gRPC server serving one or more services on one endpoint;
// the engine's management API, the CSI controller and node plugin, and the
// in-process tests all start their servers through it.
//
//   EngineService service(...);
//   auto server = rpc::GrpcServer::Start({.endpoint = "unix:///run/tandem/engine.sock",
//                                         .services = {&service},
//                                         .log_tag = "engine_api"});
//   if (!server.ok()) return server.status();
//   ...
//   (*server)->Shutdown(std::chrono::seconds(5));
//
// Endpoints: the grammar of endpoint.h ("unix:///abs", "unix://rel",
// "unix:/abs", "tcp://HOST:PORT", "HOST:PORT"; port 0: the kernel picks
// one, see port()).
//
// Unix sockets are created with mode 0600 (kUnixSocketMode): only the
// server's user can connect. A socket file left behind by a dead server is
// removed before binding (nothing answers a connect on it); one a live
// server answers on is UNAVAILABLE (gRPC itself would silently unlink it
// and steal the address), and a path that is not a socket is never removed
// (FAILED_PRECONDITION). Shutdown removes the socket file again if it is
// still the one this server created. Start sets the process umask while gRPC
// binds a unix socket, so it must not run while other threads create files
// whose mode matters (daemons start it before serving anything).
// SO_REUSEPORT is off, so a second server on a TCP port in use fails to
// start instead of silently sharing it.
//
// Every call is logged as one line (call_log.h: method, peer, duration,
// status code and message, the request with secrets redacted).
//
// Transport: plaintext, or TLS / mutual TLS from PEM files (options.tls).
//
// Authentication: with insecure credentials gRPC 1.51 has no server hook that
// can refuse a call before its handler runs, so the server does not check
// tokens itself: each handler starts with BearerTokenAuth::Check, most simply
// through ServeCall (handler_guard.h), which also turns exceptions into
// INTERNAL / RESOURCE_EXHAUSTED.
//
// Thread-safety: Shutdown() may be called from any thread, but not
// concurrently with itself or the destructor.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/impl/codegen/service_type.h>
#include <grpcpp/server.h>

#include "common/grpc/endpoint.h"
#include "common/grpc/tls.h"
#include "common/logging.h"
#include "common/result.h"

namespace tandem::rpc {

// Mode of a unix socket GrpcServer listens on.
constexpr unsigned kUnixSocketMode = 0600;

// The file of a "unix:" endpoint ("unix:/a", "unix:///a": "/a"); "" for any
// other endpoint or a malformed one.
std::string UnixSocketPath(const std::string& endpoint);

struct GrpcServerOptions {
  // Where to listen (endpoint.h).
  std::string endpoint;
  // The services to serve; not owned, each must outlive the server. At least
  // one.
  std::vector<grpc::Service*> services;
  // Call logging (call_log.h). `log_tag` is the tag of the log lines.
  bool log_calls = true;
  std::string log_tag = "grpc";
  // Level of the line of a call that succeeded (a heartbeat-heavy server may
  // want kDebug); a failed call is logged at kInfo or above.
  LogLevel ok_level = LogLevel::kInfo;
  // Log each request (redacted, at most 1 KiB of it) with its call.
  bool log_requests = true;
  // TLS (tls.h): none by default (plaintext); with a CA file, mutual TLS.
  TlsConfig tls;
};

class GrpcServer {
 public:
  // Starts serving. INVALID_ARGUMENT for a malformed endpoint, no service or
  // an unusable TLS configuration,
  // UNAVAILABLE when the endpoint cannot be bound or a live server owns the
  // unix socket, FAILED_PRECONDITION when the socket path is another kind of
  // file.
  static Result<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options);
  // Start({.endpoint = endpoint, .services = {service}}).
  static Result<std::unique_ptr<GrpcServer>> Start(const std::string& endpoint,
                                                   grpc::Service* service);
  ~GrpcServer();  // Shutdown(0) if not yet shut down

  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The bound TCP port; 0 for a unix socket.
  uint16_t port() const { return port_; }
  // The endpoint as parsed (for a TCP port 0: still 0; see port()).
  const Endpoint& endpoint() const { return endpoint_; }

  // Stops accepting calls, lets running calls finish for up to `grace`, then
  // cancels the rest, waits for the handlers to return and removes the unix
  // socket file.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, Endpoint endpoint, uint16_t port,
             uint64_t socket_inode);

  std::unique_ptr<grpc::Server> server_;
  Endpoint endpoint_;
  uint16_t port_;
  uint64_t socket_inode_;  // of the unix socket file we created; 0 for TCP
  bool shut_down_ = false;
};

}  // namespace tandem::rpc

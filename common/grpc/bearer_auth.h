#pragma once
// Bearer-token authentication of gRPC calls: the client sends the metadata
// "authorization: Bearer <token>", the server compares it in constant time.
//
//   // server, first thing in every handler (or through ServeCall,
//   // handler_guard.h):
//   if (Status st = auth_.Check(*ctx); !st.ok()) return ToGrpcStatus(st);
//   // client:
//   AddBearerToken(&client_context, token);
//
// The token is never logged or put into an error message.
// Thread-safety: Check is const and may run concurrently.

#include <string>

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>

#include "common/status.h"

namespace tandem::rpc {

class BearerTokenAuth {
 public:
  // An empty token allows every call (no authentication).
  explicit BearerTokenAuth(std::string token = std::string()) : token_(std::move(token)) {}

  bool enabled() const { return !token_.empty(); }

  // OK when disabled or the call carries the token; UNAUTHENTICATED
  // ("missing authorization metadata" / "bad token") otherwise.
  Status Check(const grpc::ServerContext& ctx) const;

 private:
  std::string token_;
};

// Adds "authorization: Bearer <token>" to a client call; nothing when the
// token is empty.
void AddBearerToken(grpc::ClientContext* ctx, const std::string& token);

// Compares in time independent of where the strings differ (only the
// lengths leak), so a token cannot be guessed byte by byte from response times.
bool ConstantTimeEqual(std::string_view a, std::string_view b);

}  // namespace tandem::rpc

#pragma once
// The frame every gRPC handler of ours runs in.
//
//   grpc::Status MyService::DoThing(grpc::ServerContext* ctx, const Req* req, Resp* resp) {
//     return rpc::ServeCall("DoThing", auth_, *ctx, [&]() -> grpc::Status {
//       ... validate, act, fill *resp ...
//       return grpc::Status::OK;
//     });
//   }
//
// GuardHandler runs the body and returns its status; an exception it throws
// is logged and answered instead (std::bad_alloc: RESOURCE_EXHAUSTED,
// anything else: INTERNAL), naming the method. gRPC's own catch-all answers
// UNKNOWN "Unexpected error in RPC handling" and logs nothing; built without
// exception support it would let it end the process. Our code does not
// throw, but the standard library and protobuf may (allocation), and a
// daemon serving many volumes must outlive one bad call.
// ServeCall checks the bearer token first (UNAUTHENTICATED, body not run).

#include <exception>
#include <new>

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include "common/grpc/bearer_auth.h"
#include "common/grpc/grpc_status.h"

namespace tandem::rpc {

namespace internal {
// GuardHandler's answers; they never throw.
grpc::Status AnswerBadAlloc(const char* method) noexcept;
grpc::Status AnswerException(const char* method, const char* what) noexcept;
}  // namespace internal

template <typename Body>
grpc::Status GuardHandler(const char* method, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return internal::AnswerBadAlloc(method);
  } catch (const std::exception& e) {
    return internal::AnswerException(method, e.what());
  } catch (...) {
    return internal::AnswerException(method, "an exception that is not a std::exception");
  }
}

template <typename Body>
grpc::Status ServeCall(const char* method, const BearerTokenAuth& auth,
                       const grpc::ServerContext& ctx, Body&& body) noexcept {
  return GuardHandler(method, [&]() -> grpc::Status {
    if (Status st = auth.Check(ctx); !st.ok()) return ToGrpcStatus(st);
    return body();
  });
}

}  // namespace tandem::rpc

#include "common/grpc/grpc_status.h"

namespace tandem::rpc {

// The static_asserts pin the "codes are gRPC's" promise of common/status.h; if
// either enum ever moves, this file stops compiling instead of mislabelling
// errors on the wire.
static_assert(static_cast<int>(StatusCode::kInvalidArgument) == grpc::INVALID_ARGUMENT);
static_assert(static_cast<int>(StatusCode::kNotFound) == grpc::NOT_FOUND);
static_assert(static_cast<int>(StatusCode::kAlreadyExists) == grpc::ALREADY_EXISTS);
static_assert(static_cast<int>(StatusCode::kUnavailable) == grpc::UNAVAILABLE);
static_assert(static_cast<int>(StatusCode::kUnauthenticated) == grpc::UNAUTHENTICATED);

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return Status::Ok();
  int code = static_cast<int>(status.error_code());
  // A code outside the canonical range can only come from a foreign peer.
  if (code < 1 || code > static_cast<int>(StatusCode::kUnauthenticated)) {
    return Status(StatusCode::kUnknown, status.error_message());
  }
  return Status(static_cast<StatusCode>(code), status.error_message());
}

}  // namespace tandem::rpc

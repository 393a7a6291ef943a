#pragma once
// Conversion between tandem::Status and grpc::Status. Our StatusCode values are
// gRPC's canonical codes (common/status.h), so the conversion is 1:1 and keeps
// the message unchanged in both directions. A code outside the canonical range
// (only a foreign peer sends one) becomes UNKNOWN.

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace tandem::rpc {

grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);

}  // namespace tandem::rpc

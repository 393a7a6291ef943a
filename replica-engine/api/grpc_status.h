#pragma once
// Conversion between tandem::Status and grpc::Status. Our StatusCode values are
// gRPC's canonical codes (common/status.h), so the conversion is 1:1 and keeps
// the message unchanged in both directions.

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace tandem::api {

grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);

}  // namespace tandem::api

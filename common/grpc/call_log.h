#pragma once
// A gRPC server interceptor that logs one line per call:
//
//   I engine_api: /tandem.engine.v1.Engine/CreateReplica OK 3.1ms peer=unix: req={volume_id: "v1"
//   ...} I engine_api: /tandem.engine.v1.Engine/GetTarget NOT_FOUND 0.2ms peer=ipv4:127.0.0.1:4711
//   "no target v9"
//
// The request is printed with RedactedText (redact.h), so no secret field and
// no CSI `secrets` map reaches the log; metadata (the authorization header)
// is never printed. GrpcServer installs it; only services whose requests are
// protobuf messages may be served with log_requests (all of ours are).

#include <memory>
#include <string>

#include <grpcpp/support/server_interceptor.h>

#include "common/logging.h"

namespace tandem::rpc {

struct CallLogOptions {
  std::string tag = "grpc";
  // Level of a call that returned OK; a failed call is logged at kInfo or above.
  LogLevel ok_level = LogLevel::kInfo;
  bool log_requests = true;
};

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewCallLogFactory(
    CallLogOptions options);

// The name of a canonical status code ("OK", "NOT_FOUND", ...); "CODE_<n>"
// outside the canonical range.
std::string StatusCodeName(int code);

}  // namespace tandem::rpc

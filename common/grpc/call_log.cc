#include "common/grpc/call_log.h"

#include <google/protobuf/message.h>
#include <grpcpp/server_context.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "common/grpc/redact.h"

namespace tandem::rpc {
namespace {

using grpc::experimental::InterceptionHookPoints;

class CallLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallLogInterceptor(const CallLogOptions* options, grpc::experimental::ServerRpcInfo* info)
      : options_(options), info_(info), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        options_->log_requests && request_.empty()) {
      // The deserialized request, untyped by the interceptor API; every
      // service we serve has protobuf messages (call_log.h).
      if (void* msg = methods->GetRecvMessage(); msg != nullptr) {
        request_ = RedactedText(*static_cast<const google::protobuf::Message*>(msg), 640);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Log(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  void Log(const grpc::Status& status) const {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
            .count();
    const LogLevel level =
        status.ok() ? options_->ok_level : std::max(options_->ok_level, LogLevel::kInfo);
    if (level < GetLogLevel()) return;
    const std::string peer = info_->server_context() ? info_->server_context()->peer() : "";
    const std::string code = StatusCodeName(status.error_code());
    std::string detail;
    if (!status.ok()) detail += " \"" + status.error_message() + "\"";
    if (!request_.empty()) detail += " req={" + request_ + "}";
    LogMessage(level, options_->tag.c_str(), "%s %s %.1fms peer=%s%s", info_->method(),
               code.c_str(), ms, peer.c_str(), detail.c_str());
  }

  const CallLogOptions* options_;
  grpc::experimental::ServerRpcInfo* info_;
  const std::chrono::steady_clock::time_point start_;
  std::string request_;
};

class CallLogFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallLogFactory(CallLogOptions options) : options_(std::move(options)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallLogInterceptor(&options_, info);  // gRPC owns it
  }

 private:
  const CallLogOptions options_;  // the server keeps the factory alive
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewCallLogFactory(
    CallLogOptions options) {
  return std::make_unique<CallLogFactory>(std::move(options));
}

std::string StatusCodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) {
    return kNames[code];
  }
  return "CODE_" + std::to_string(code);
}

}  // namespace tandem::rpc

#include "common/grpc/handler_guard.h"

#include <string>

#include "common/logging.h"

namespace tandem::rpc::internal {
namespace {
constexpr char kTag[] = "grpc";
}  // namespace

grpc::Status AnswerBadAlloc(const char* method) noexcept {
  try {
    TLOG_ERROR(kTag, "%s: out of memory (std::bad_alloc); the call fails, the server goes on",
               method);
    return grpc::Status(grpc::RESOURCE_EXHAUSTED, std::string(method) + ": out of memory");
  } catch (...) {
    return grpc::Status(grpc::RESOURCE_EXHAUSTED, std::string());
  }
}

grpc::Status AnswerException(const char* method, const char* what) noexcept {
  try {
    TLOG_ERROR(kTag, "%s: unexpected exception: %s", method, what);
    return grpc::Status(grpc::INTERNAL, std::string(method) + ": unexpected exception: " + what);
  } catch (...) {
    return grpc::Status(grpc::INTERNAL, std::string());
  }
}

}  // namespace tandem::rpc::internal

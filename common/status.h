#pragma once
// Status: the error value returned by everything in Tandem that can fail.
//
// The codes are gRPC's canonical codes, so a Status crosses the management API
// (and later the CSI servers) 1:1 without translation tables. OK carries no
// allocation: success costs one null pointer, as in leveldb's Status.
//
// Thread-safety: a Status is a value; distinct objects may be used from
// different threads, a single object needs external synchronisation.

#include <memory>
#include <string>
#include <string_view>

namespace tandem {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// Returns the canonical upper-case name ("NOT_FOUND").
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string_view msg);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string_view m) { return {StatusCode::kInvalidArgument, m}; }
  static Status NotFound(std::string_view m) { return {StatusCode::kNotFound, m}; }
  static Status AlreadyExists(std::string_view m) { return {StatusCode::kAlreadyExists, m}; }
  static Status FailedPrecondition(std::string_view m) {
    return {StatusCode::kFailedPrecondition, m};
  }
  static Status OutOfRange(std::string_view m) { return {StatusCode::kOutOfRange, m}; }
  static Status ResourceExhausted(std::string_view m) {
    return {StatusCode::kResourceExhausted, m};
  }
  static Status Unavailable(std::string_view m) { return {StatusCode::kUnavailable, m}; }
  static Status Internal(std::string_view m) { return {StatusCode::kInternal, m}; }
  static Status DataLoss(std::string_view m) { return {StatusCode::kDataLoss, m}; }
  static Status Unimplemented(std::string_view m) { return {StatusCode::kUnimplemented, m}; }
  static Status DeadlineExceeded(std::string_view m) {
    return {StatusCode::kDeadlineExceeded, m};
  }
  static Status PermissionDenied(std::string_view m) {
    return {StatusCode::kPermissionDenied, m};
  }
  static Status Unauthenticated(std::string_view m) { return {StatusCode::kUnauthenticated, m}; }
  static Status Aborted(std::string_view m) { return {StatusCode::kAborted, m}; }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  // The message without the code; empty for OK.
  const std::string& message() const;
  // "NOT_FOUND: replica vol-1 does not exist", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "context: message" (same code).
  Status WithContext(std::string_view context) const;

 private:
  struct Rep {
    StatusCode code;
    std::string msg;
  };
  std::unique_ptr<Rep> rep_;
};

// Turns an errno value into a Status once, with context:
// PosixError("open /x/data", ENOENT) -> NOT_FOUND "open /x/data: No such file or directory".
Status PosixError(std::string_view context, int err);

}  // namespace tandem

// Propagates a non-OK Status to the caller.
#define TANDEM_RETURN_IF_ERROR(expr)       \
  do {                                     \
    ::tandem::Status _st = (expr);         \
    if (!_st.ok()) return _st;             \
  } while (0)

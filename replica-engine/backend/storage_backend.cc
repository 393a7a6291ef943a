#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {

const char* IoOpName(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "READ";
    case IoOp::kWrite:
      return "WRITE";
    case IoOp::kFlush:
      return "FLUSH";
    case IoOp::kDiscard:
      return "DISCARD";
    case IoOp::kWriteZeroes:
      return "WRITE_ZEROES";
  }
  // Reachable only through a corrupted enum value (e.g. decoded from the wire
  // without validation); a string beats undefined behaviour in a log line.
  return "UNKNOWN";
}

}  // namespace tandem::backend

#include "replica-engine/protocol/wire_format.h"

namespace tandem::protocol {

// The reply bit is ignored: logs print the direction separately, and a reply
// is named after the operation it answers.
const char* OpcodeName(uint8_t opcode) {
  switch (static_cast<Opcode>(opcode & ~kReplyBit)) {
    case Opcode::kHello:
      return "HELLO";
    case Opcode::kRead:
      return "READ";
    case Opcode::kWrite:
      return "WRITE";
    case Opcode::kFlush:
      return "FLUSH";
    case Opcode::kTrim:
      return "TRIM";
    case Opcode::kWriteZeroes:
      return "WRITE_ZEROES";
    case Opcode::kGetInfo:
      return "GET_INFO";
    case Opcode::kSetGeneration:
      return "SET_GENERATION";
    case Opcode::kMarkDirty:
      return "MARK_DIRTY";
    case Opcode::kGetDirtyMap:
      return "GET_DIRTY_MAP";
    case Opcode::kClearDirty:
      return "CLEAR_DIRTY";
    case Opcode::kGetAllocation:
      return "GET_ALLOCATION";
    case Opcode::kSetRebuildCursor:
      return "SET_REBUILD_CURSOR";
    case Opcode::kChallenge:
      return "CHALLENGE";
  }
  return "UNKNOWN";
}

const char* WireStatusName(WireStatus status) {
  switch (status) {
    case WireStatus::kOk:
      return "OK";
    case WireStatus::kIoError:
      return "IO_ERROR";
    case WireStatus::kInvalid:
      return "INVALID";
    case WireStatus::kNoSpace:
      return "NO_SPACE";
    case WireStatus::kOutOfRange:
      return "OUT_OF_RANGE";
    case WireStatus::kNotFound:
      return "NOT_FOUND";
    case WireStatus::kAuthFailed:
      return "AUTH_FAILED";
    case WireStatus::kStaleEpoch:
      return "STALE_EPOCH";
    case WireStatus::kUnsupported:
      return "UNSUPPORTED";
    case WireStatus::kNotReady:
      return "NOT_READY";
  }
  // A peer may send a status this build does not know (a newer version).
  return "UNKNOWN";
}

StatusCode StatusCodeOf(WireStatus status) {
  switch (status) {
    case WireStatus::kOk:
      return StatusCode::kOk;
    case WireStatus::kIoError:
      return StatusCode::kInternal;
    case WireStatus::kInvalid:
      return StatusCode::kInvalidArgument;
    case WireStatus::kNoSpace:
      return StatusCode::kResourceExhausted;
    case WireStatus::kOutOfRange:
      return StatusCode::kOutOfRange;
    case WireStatus::kNotFound:
      return StatusCode::kNotFound;
    case WireStatus::kAuthFailed:
      return StatusCode::kUnauthenticated;
    case WireStatus::kStaleEpoch:
    case WireStatus::kNotReady:
      return StatusCode::kFailedPrecondition;
    case WireStatus::kUnsupported:
      return StatusCode::kUnimplemented;
  }
  return StatusCode::kInternal;
}

}  // namespace tandem::protocol

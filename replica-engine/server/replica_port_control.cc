// ReplicaPort: the control requests answered synchronously on the loop
// thread (GET_INFO's payload, SET_GENERATION, GET_DIRTY_MAP, GET_ALLOCATION,
// SET_REBUILD_CURSOR). The HELLO and the I/O path are in replica_port.cc;
// see replica_port.h.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/logging.h"
#include "replica-engine/server/replica_port.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::server {

using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "replica_port";
}  // namespace

WireStatus ReplicaPort::Control(PortRequest* s) {
  s->control.clear();
  if (!opened() || closed_) return WireStatus::kNotReady;
  if (superseded_) return WireStatus::kStaleEpoch;
  switch (s->op) {
    case Opcode::kGetInfo:
      SetInfoReply(s);
      return WireStatus::kOk;
    case Opcode::kSetGeneration:
    case Opcode::kGetDirtyMap:
      return HandleDirtyOp(s);
    case Opcode::kGetAllocation:
      return HandleGetAllocation(s);
    case Opcode::kSetRebuildCursor:
      return HandleSetRebuildCursor(s);
    default:
      return WireStatus::kUnsupported;
  }
}

WireStatus ReplicaPort::FromReplicaStatus(const Status& st) {
  switch (st.code()) {
    case StatusCode::kOk:
      return WireStatus::kOk;
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:  // e.g. a lower generation
      return WireStatus::kInvalid;
    case StatusCode::kOutOfRange:
      return WireStatus::kOutOfRange;
    default:
      return WireStatus::kIoError;
  }
}

WireStatus ReplicaPort::HandleDirtyOp(PortRequest* s) {
  // Only SET_GENERATION may carry a payload (its GenerationRecord).
  if (s->payload_length != 0 && s->op != Opcode::kSetGeneration) return WireStatus::kInvalid;
  replica::Replica* r = replica_.get();
  const uint32_t region = r->dirty_region_size();
  Status st;
  switch (s->op) {
    case Opcode::kSetGeneration: {
      const bool track = (s->flags & protocol::kFlagTrackDirty) != 0;
      if (s->payload_length != 0) {
        protocol::GenerationRecord rec;
        st = s->length != s->payload_length
                 ? Status::InvalidArgument("length differs from payload_length")
                 : protocol::DecodeGenerationRecord(
                       std::string_view(static_cast<const char*>(s->buf), s->payload_length), &rec);
        if (!st.ok()) {
          TLOG_WARN(kTag, "%s: SET_GENERATION %llu: bad generation record: %s", peer_.c_str(),
                    static_cast<unsigned long long>(s->offset), st.ToString().c_str());
          return WireStatus::kInvalid;
        }
        if (track && region == 0) return WireStatus::kUnsupported;
        st = r->SetGeneration(s->offset, track, rec.id, rec.history);
      } else {
        if (track && region == 0) return WireStatus::kUnsupported;
        st = r->SetGeneration(s->offset, track);
      }
      if (!st.ok()) {
        TLOG_WARN(kTag, "%s: SET_GENERATION %llu refused: %s", peer_.c_str(),
                  static_cast<unsigned long long>(s->offset), st.ToString().c_str());
      }
      return FromReplicaStatus(st);
    }
    case Opcode::kGetDirtyMap: {
      // kFlagActivity: the activity log, in the same format.
      const bool activity = (s->flags & protocol::kFlagActivity) != 0;
      const uint32_t unit = activity ? r->activity_extent_size() : region;
      if (unit == 0) return WireStatus::kUnsupported;
      const uint64_t per_byte = uint64_t{unit} * 8;  // bytes of volume per map byte
      if (s->offset % per_byte != 0) return WireStatus::kInvalid;
      if (s->offset >= size_) return WireStatus::kOutOfRange;
      const uint32_t limit =
          s->length == 0 || s->length > protocol::kMaxPayload ? protocol::kMaxPayload : s->length;
      if (limit <= protocol::kDirtyMapPrefixSize) return WireStatus::kInvalid;
      const std::vector<uint8_t>& map = activity ? r->activity_map() : r->dirty_map();
      const uint64_t first = s->offset / per_byte;
      const uint64_t n =
          std::min<uint64_t>(map.size() - first, limit - protocol::kDirtyMapPrefixSize);
      protocol::DirtyMapChunk chunk;
      chunk.region_size = unit;
      chunk.volume_size = size_;
      chunk.bitmap = std::string_view(reinterpret_cast<const char*>(map.data() + first), n);
      // Copied: the map may change while the reply waits for the socket.
      st = protocol::EncodeDirtyMap(chunk, &s->control);
      if (!st.ok()) return WireStatus::kIoError;  // not reached: the replica's map is valid
      return WireStatus::kOk;
    }
    default:
      return WireStatus::kUnsupported;  // not reached
  }
}

void ReplicaPort::SetInfoReply(PortRequest* s) {
  const replica::ReplicaMetadata& md = replica_->metadata();
  protocol::ReplicaInfo info;
  info.size = md.size;
  info.block_size = md.block_size;
  info.max_inflight = static_cast<uint32_t>(max_inflight_);
  info.generation = md.generation;
  info.highest_epoch = volume_->highest_epoch;
  info.replica_id = md.replica_id;
  info.tracking_dirty = md.tracking_dirty;
  info.dirty_since_generation = md.dirty_since_generation;
  info.rebuild_cursor = md.rebuild_cursor;
  info.rebuild_generation = md.rebuild_generation;
  info.generation_id = md.generation_id;
  info.generation_history = md.generation_history;
  info.clean_shutdown = replica_->was_clean();
  info.activity_extent_size = replica_->activity_extent_size();
  info.activity_count = static_cast<uint32_t>(replica_->activity_count());
  // Cannot fail: the ids were validated when the replica was created.
  (void)protocol::EncodeReplicaInfo(info, &s->control);
}

WireStatus ReplicaPort::HandleGetAllocation(PortRequest* s) {
  if (s->payload_length != 0) return WireStatus::kInvalid;
  WireStatus ws = CheckRange(*s, true);
  if (ws != WireStatus::kOk) return ws;
  // On the stack: 16 KiB, and the loop thread's stack is the default 8 MiB.
  replica::DataExtent found[protocol::kMaxAllocationExtents];
  uint32_t count = 0;
  uint64_t covered_end = 0;
  Status st = replica_->FindAllocated(s->offset, s->length, found, protocol::kMaxAllocationExtents,
                                      &count, &covered_end);
  if (!st.ok()) {
    TLOG_ERROR(kTag, "%s: GET_ALLOCATION %llu+%u: %s", peer_.c_str(),
               static_cast<unsigned long long>(s->offset), s->length, st.ToString().c_str());
    return WireStatus::kIoError;
  }
  protocol::AllocationExtent extents[protocol::kMaxAllocationExtents];
  for (uint32_t i = 0; i < count; ++i) extents[i] = {found[i].offset, found[i].length};
  st = protocol::EncodeAllocation(covered_end, extents, count, &s->control);
  if (!st.ok()) return WireStatus::kIoError;  // not reached: FindAllocated keeps the rules
  return WireStatus::kOk;
}

WireStatus ReplicaPort::HandleSetRebuildCursor(PortRequest* s) {
  protocol::RebuildCursor c;
  if (s->length != s->payload_length ||
      !protocol::DecodeRebuildCursor(
           std::string_view(static_cast<const char*>(s->buf), s->payload_length), &c)
           .ok()) {
    return WireStatus::kInvalid;
  }
  Status st = replica_->SetRebuildCursor(c.cursor, c.generation);
  if (!st.ok() && st.code() != StatusCode::kOutOfRange) {
    TLOG_ERROR(kTag, "%s: SET_REBUILD_CURSOR %llu: %s", peer_.c_str(),
               static_cast<unsigned long long>(c.cursor), st.ToString().c_str());
  }
  return FromReplicaStatus(st);
}

}  // namespace tandem::server

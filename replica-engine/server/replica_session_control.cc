// ReplicaSession: the control requests answered on the loop thread
// (HELLO and CHALLENGE, the dirty-map operations, GET_INFO's payload,
// GET_ALLOCATION, SET_REBUILD_CURSOR). The framing, slots and the data path
// are in replica_session.cc; see replica_session.h.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/crc32c.h"
#include "common/logging.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/server/replica_session.h"

namespace tandem::server {

using protocol::FrameHeader;
using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "replica_session";
}  // namespace

namespace {
// Replica errors on the dirty-map paths, as a reply status.
WireStatus FromReplicaStatus(const Status& st) {
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
}  // namespace

WireStatus ReplicaSession::HandleDirtyOp(Slot* s, const FrameHeader& h, const uint8_t* payload) {
  // Only SET_GENERATION may carry a payload (its GenerationRecord).
  if (h.payload_length != 0 && h.op() != Opcode::kSetGeneration) return WireStatus::kInvalid;
  replica::Replica* r = replica_.get();
  const uint32_t region = r->dirty_region_size();
  Status st;
  switch (h.op()) {
    case Opcode::kSetGeneration: {
      const bool track = (h.flags & protocol::kFlagTrackDirty) != 0;
      if (h.payload_length != 0) {
        protocol::GenerationRecord rec;
        st = h.length != h.payload_length
                 ? Status::InvalidArgument("length differs from payload_length")
                 : protocol::DecodeGenerationRecord(
                       std::string_view(reinterpret_cast<const char*>(payload), h.payload_length),
                       &rec);
        if (!st.ok()) {
          TLOG_WARN(kTag, "%s: SET_GENERATION %llu: bad generation record: %s", peer_.c_str(),
                    static_cast<unsigned long long>(h.offset), st.ToString().c_str());
          return WireStatus::kInvalid;
        }
        if (track && region == 0) return WireStatus::kUnsupported;
        st = r->SetGeneration(h.offset, track, rec.id, rec.history);
      } else {
        if (track && region == 0) return WireStatus::kUnsupported;
        st = r->SetGeneration(h.offset, track);
      }
      if (!st.ok()) {
        TLOG_WARN(kTag, "%s: SET_GENERATION %llu refused: %s", peer_.c_str(),
                  static_cast<unsigned long long>(h.offset), st.ToString().c_str());
      }
      return FromReplicaStatus(st);
    }
    case Opcode::kGetDirtyMap: {
      // kFlagActivity: the activity log, in the same format.
      const bool activity = (h.flags & protocol::kFlagActivity) != 0;
      const uint32_t unit = activity ? r->activity_extent_size() : region;
      if (unit == 0) return WireStatus::kUnsupported;
      const uint64_t per_byte = uint64_t{unit} * 8;  // bytes of volume per map byte
      if (h.offset % per_byte != 0) return WireStatus::kInvalid;
      if (h.offset >= size_) return WireStatus::kOutOfRange;
      const uint32_t limit =
          h.length == 0 || h.length > protocol::kMaxPayload ? protocol::kMaxPayload : h.length;
      if (limit <= protocol::kDirtyMapPrefixSize) return WireStatus::kInvalid;
      const std::vector<uint8_t>& map = activity ? r->activity_map() : r->dirty_map();
      const uint64_t first = h.offset / per_byte;
      const uint64_t n =
          std::min<uint64_t>(map.size() - first, limit - protocol::kDirtyMapPrefixSize);
      protocol::DirtyMapChunk chunk;
      chunk.region_size = unit;
      chunk.volume_size = size_;
      chunk.bitmap = std::string_view(reinterpret_cast<const char*>(map.data() + first), n);
      // Copied: the map may change while the reply waits for the socket.
      st = protocol::EncodeDirtyMap(chunk, &s->control);
      if (!st.ok()) return WireStatus::kIoError;  // not reached: the replica's map is valid
      s->payload = reinterpret_cast<const uint8_t*>(s->control.data());
      s->payload_len = static_cast<uint32_t>(s->control.size());
      return WireStatus::kOk;
    }
    default:
      return WireStatus::kUnsupported;  // not reached
  }
}

WireStatus ReplicaSession::StartDirtyUpdate(Slot* s, const FrameHeader& h) {
  if (h.payload_length != 0) return WireStatus::kInvalid;
  if (replica_->dirty_region_size() == 0) return WireStatus::kUnsupported;
  WireStatus ws = CheckRange(h, true);
  if (ws != WireStatus::kOk) return ws;
  // In memory now; the reply waits for a persist covering it, which the
  // parked writes' group commit provides (one slot write for every change of
  // a loop iteration), so a MARK_DIRTY storm costs no fdatasync on the loop.
  Result<bool> durable = h.op() == Opcode::kMarkDirty
                             ? replica_->NoteMarkDirty(h.offset, h.length)
                             : replica_->NoteClearDirty(h.offset, h.length);
  if (!durable.ok()) return FromReplicaStatus(durable.status());
  s->req.op = backend::IoOp::kNop;  // completes with 0: answered like an I/O
  s->req.fd = data_fd_;
  s->req.offset = h.offset;
  s->req.length = h.length;
  s->req.flags = 0;
  s->req.buf = nullptr;
  s->req.result = 0;
  ++inflight_;
  if (*durable) {
    server_->backend_->Queue(&s->req);
  } else {
    ParkForPersist(s);
  }
  return WireStatus::kOk;
}

void ReplicaSession::ParkForPersist(Slot* s) {
  s->dirty_seq = replica_->dirty_seq();
  dirty_.PushBack(s);
  server_->MarkDirtyWaiting(this);
}

void ReplicaSession::SetInfoReply(Slot* s) {
  const replica::ReplicaMetadata& md = replica_->metadata();
  protocol::ReplicaInfo info;
  info.size = md.size;
  info.block_size = md.block_size;
  info.max_inflight = static_cast<uint32_t>(slots_.size());
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
  s->payload = reinterpret_cast<const uint8_t*>(s->control.data());
  s->payload_len = static_cast<uint32_t>(s->control.size());
}

WireStatus ReplicaSession::HandleGetAllocation(Slot* s, const FrameHeader& h) {
  if (h.payload_length != 0) return WireStatus::kInvalid;
  WireStatus ws = CheckRange(h, true);
  if (ws != WireStatus::kOk) return ws;
  // On the stack: 16 KiB, and the loop thread's stack is the default 8 MiB.
  replica::DataExtent found[protocol::kMaxAllocationExtents];
  uint32_t count = 0;
  uint64_t covered_end = 0;
  Status st = replica_->FindAllocated(h.offset, h.length, found, protocol::kMaxAllocationExtents,
                                      &count, &covered_end);
  if (!st.ok()) {
    TLOG_ERROR(kTag, "%s: GET_ALLOCATION %llu+%u: %s", peer_.c_str(),
               static_cast<unsigned long long>(h.offset), h.length, st.ToString().c_str());
    return WireStatus::kIoError;
  }
  protocol::AllocationExtent extents[protocol::kMaxAllocationExtents];
  for (uint32_t i = 0; i < count; ++i) extents[i] = {found[i].offset, found[i].length};
  st = protocol::EncodeAllocation(covered_end, extents, count, &s->control);
  if (!st.ok()) return WireStatus::kIoError;  // not reached: FindAllocated keeps the rules
  s->payload = reinterpret_cast<const uint8_t*>(s->control.data());
  s->payload_len = static_cast<uint32_t>(s->control.size());
  return WireStatus::kOk;
}

WireStatus ReplicaSession::HandleSetRebuildCursor(const FrameHeader& h, const uint8_t* payload) {
  protocol::RebuildCursor c;
  if (h.length != h.payload_length ||
      !protocol::DecodeRebuildCursor(
           std::string_view(reinterpret_cast<const char*>(payload), h.payload_length), &c)
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

void ReplicaSession::HandleChallenge(Slot* s, const FrameHeader& h) {
  // One nonce per connection, before HELLO: a second one, or one after HELLO,
  // is a broken peer.
  if (hello_done_ || !nonce_.empty() || h.payload_length != 0) {
    QueueReply(s, WireStatus::kInvalid);
    close_after_flush_ = true;
    return;
  }
  Status st = protocol::RandomNonce(&nonce_);
  if (!st.ok()) {
    TLOG_ERROR(kTag, "%s: CHALLENGE: %s", peer_.c_str(), st.ToString().c_str());
    QueueReply(s, WireStatus::kIoError);
    close_after_flush_ = true;
    return;
  }
  s->control = nonce_;
  s->payload = reinterpret_cast<const uint8_t*>(s->control.data());
  s->payload_len = static_cast<uint32_t>(s->control.size());
  QueueReply(s, WireStatus::kOk);
}

bool ReplicaSession::HandleHello(Slot* s, const uint8_t* payload, uint32_t len) {
  protocol::HelloRequest hello;
  Status st =
      protocol::DecodeHello(std::string_view(reinterpret_cast<const char*>(payload), len), &hello);
  if (!st.ok()) {
    TLOG_WARN(kTag, "%s: bad HELLO: %s", peer_.c_str(), st.ToString().c_str());
    QueueReply(s, WireStatus::kInvalid);
    close_after_flush_ = true;
    return true;
  }
  if (hello_done_) {
    QueueReply(s, WireStatus::kInvalid);  // one HELLO per connection
    close_after_flush_ = true;
    return true;
  }
  VolumeState* vol = nullptr;
  bool retry = false;
  WireStatus ws = server_->AcceptHello(this, hello, &vol, &retry);
  if (retry) return false;
  if (ws != WireStatus::kOk) {
    TLOG_WARN(kTag, "%s: HELLO for volume '%s' epoch %llu refused: %s", peer_.c_str(),
              hello.volume_id.c_str(), static_cast<unsigned long long>(hello.epoch),
              protocol::WireStatusName(ws));
    QueueReply(s, ws);
    close_after_flush_ = true;
    return true;
  }
  hello_done_ = true;
  GrowRx();
  epoch_ = hello.epoch;
  target_id_ = hello.target_id;
  volume_ = vol;
  const replica::ReplicaMetadata& md = vol->replica->metadata();
  replica_ = vol->replica;
  data_fd_ = vol->replica->fd();
  size_ = md.size;
  block_size_ = md.block_size;
  SetInfoReply(s);
  QueueReply(s, WireStatus::kOk);
  TLOG_INFO(kTag, "%s: volume '%s' attached at epoch %llu", peer_.c_str(), hello.volume_id.c_str(),
            static_cast<unsigned long long>(epoch_));
  return true;
}

}  // namespace tandem::server

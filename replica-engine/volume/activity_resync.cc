// Activity-log resync at attach (DRBD's activity log, brief §6 "no
// acknowledged write is lost across kill -9 of the target").
//
// Every replica keeps an activity log: the extents with writes that may not
// be on every replica yet (marked durably before a write is submitted,
// retired lazily after a FLUSH; docs/protocol.md). When a target dies, writes
// it had in flight may have reached some replicas and not others, so replicas
// at the same generation can differ inside those extents. Before the new
// target serves anything it reads the union of the HEALTHY replicas' logs and
// copies those extents from one HEALTHY replica (the local one first) to the
// others, then flushes them. Only then does the attach finish
// (FinishStart): requests wait meanwhile, as during any start-up.
//
// A replica that is not HEALTHY at attach is rebuilt anyway; its own log is
// added to its rebuild's dirty regions (rebuild.cc), which covers what it
// held unflushed when its host crashed.

#include <algorithm>
#include <cstdlib>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "activity_resync";
}  // namespace

void VolumeTargetImpl::StartResync() {
  uint32_t healthy = replicas_.HealthyMask();
  bool logged = false;
  for (const ReplicaSlot& r : replicas_) {
    if ((healthy & (1u << r.index)) && r.info.activity_count > 0) logged = true;
  }
  if (!logged) {
    FinishStart();
    return;
  }
  Resync& rs = resync_;
  rs = Resync{};
  rs.active = true;
  rs.reply.resize(protocol::kMaxPayload);
  rs.req.ctx = this;
  rs.req.done = &VolumeTargetImpl::OnResyncDone;
  for (ResyncWindow& w : rs.win) {
    w.buf.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, protocol::kMaxIoSize)));
    w.read.ctx = this;
    w.read.done = &VolumeTargetImpl::OnResyncDone;
    for (ClientRequest& c : w.write) {
      c.ctx = this;
      c.done = &VolumeTargetImpl::OnResyncDone;
    }
  }
  for (ClientRequest& c : rs.flush) {
    c.ctx = this;
    c.done = &VolumeTargetImpl::OnResyncDone;
  }
  rs.phase = ResyncPhase::kMap;
  ResyncStep();
}

// Marks [off, off + len) in the union (at resync_.extent granularity).
void VolumeTargetImpl::ResyncMark(uint64_t off, uint64_t len) {
  Resync& rs = resync_;
  if (len == 0 || off >= size_) return;
  uint64_t end = std::min(size_, off + len);
  for (uint64_t e = off / rs.extent; e * rs.extent < end; ++e) {
    if (e / 8 < rs.map.size()) rs.map[e / 8] |= static_cast<uint8_t>(1u << (e % 8));
  }
}

bool VolumeTargetImpl::ResyncMarked(uint64_t e) const {
  return e / 8 < resync_.map.size() && ((resync_.map[e / 8] >> (e % 8)) & 1) != 0;
}

bool VolumeTargetImpl::PickResyncSource() {
  ReplicaSlot* best = nullptr;
  for (ReplicaSlot& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kHealthy) continue;
    if (best == nullptr || (r.endpoint.local && !best->endpoint.local)) best = &r;
  }
  resync_.source = best == nullptr ? -1 : best->index;
  return best != nullptr;
}

void VolumeTargetImpl::ResyncStep() {
  Resync& rs = resync_;
  if (!rs.active) return;
  if (replicas_.HealthyMask() == 0) {
    rs.active = false;
    last_error_ = "every replica failed during the activity-log resync";
    state_ = TargetState::kFailed;
    loop_->Wake();
    return;
  }
  switch (rs.phase) {
    case ResyncPhase::kMap:
      if (ResyncMapStep()) ResyncStep();  // on to kCopy
      return;
    case ResyncPhase::kCopy:
      ResyncCopyStep();
      return;
    case ResyncPhase::kFlush:
      return;
  }
}

// Reads the next page of the union of the logs. True when the union is
// complete and the copy phase begins.
bool VolumeTargetImpl::ResyncMapStep() {
  Resync& rs = resync_;
  if (rs.req_busy) return false;
  if (rs.map_replica < 0 || rs.map_offset == UINT64_MAX) {
    int next = -1;
    for (const ReplicaSlot& r : replicas_) {
      if (r.index > rs.map_replica && !r.removed && r.state == ReplicaState::kHealthy &&
          r.info.activity_count > 0) {
        next = r.index;
        break;
      }
    }
    if (next < 0) {
      uint64_t extents = 0;
      for (uint64_t e = 0; rs.extent != 0 && e * rs.extent < size_; ++e) {
        extents += ResyncMarked(e) ? 1 : 0;
      }
      // Kept for the rebuilds of the replicas that are STALE now.
      start_al_ = rs.map;
      start_al_extent_ = rs.extent;
      if (extents == 0 || __builtin_popcount(replicas_.HealthyMask()) < 2 || !PickResyncSource()) {
        rs.active = false;
        FinishStart();
        return false;
      }
      TLOG_WARN(kTag,
                "volume '%s': the last target did not stop cleanly: resyncing %llu active "
                "extent(s) of %u bytes from %s before serving",
                options_.volume_id.c_str(), static_cast<unsigned long long>(extents), rs.extent,
                replicas_[rs.source].Address().c_str());
      rs.phase = ResyncPhase::kCopy;
      rs.cursor = 0;
      return true;
    }
    rs.map_replica = next;
    rs.map_offset = 0;
  }
  ReplicaSlot& r = replicas_[rs.map_replica];
  rs.req_busy = true;
  rs.req.op = Opcode::kGetDirtyMap;
  rs.req.flags = protocol::kFlagActivity;
  rs.req.offset = rs.map_offset;
  rs.req.length = static_cast<uint32_t>(rs.reply.size());
  rs.req.buf = rs.reply.data();
  r.channel->Submit(&rs.req);
  return false;
}

// Copies the marked extents, a window at a time, then flushes the replicas
// that received them.
void VolumeTargetImpl::ResyncCopyStep() {
  Resync& rs = resync_;
  bool busy = false;
  for (ResyncWindow& w : rs.win) {
    if (w.step != ResyncWindow::kFree) {
      busy = true;
      continue;
    }
    // The next marked extent from the cursor, at most kMaxIoSize.
    while (rs.cursor < size_ && !ResyncMarked(rs.cursor / rs.extent)) {
      rs.cursor = (rs.cursor / rs.extent + 1) * rs.extent;
    }
    if (rs.cursor >= size_) continue;
    uint64_t end = std::min(
        {size_, (rs.cursor / rs.extent + 1) * rs.extent, rs.cursor + protocol::kMaxIoSize});
    w.off = rs.cursor;
    w.len = static_cast<uint32_t>(end - rs.cursor);
    rs.cursor = end;
    busy = true;
    IssueResyncRead(&w);
  }
  if (busy || rs.cursor < size_) return;
  // Everything copied: make it durable on the replicas that received it.
  rs.phase = ResyncPhase::kFlush;
  rs.flush_remaining = 0;
  for (ReplicaSlot& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kHealthy || r.index == rs.source) continue;
    ClientRequest& f = rs.flush[r.index];
    f.op = Opcode::kFlush;
    f.flags = 0;
    f.offset = 0;
    f.length = 0;
    f.buf = nullptr;
    ++rs.flush_remaining;
  }
  if (rs.flush_remaining == 0) {
    rs.active = false;
    FinishStart();
    return;
  }
  for (ReplicaSlot& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kHealthy || r.index == rs.source) continue;
    r.channel->Submit(&rs.flush[r.index]);
  }
}

void VolumeTargetImpl::IssueResyncRead(ResyncWindow* w) {
  Resync& rs = resync_;
  if ((rs.source < 0 || replicas_[rs.source].state != ReplicaState::kHealthy) &&
      !PickResyncSource()) {
    w->step = ResyncWindow::kFree;
    loop_->Wake();
    return;
  }
  w->step = ResyncWindow::kRead;
  w->read.op = Opcode::kRead;
  w->read.flags = 0;
  w->read.offset = w->off;
  w->read.length = w->len;
  w->read.buf = w->buf.get();
  w->read_from = rs.source;
  replicas_[rs.source].channel->Submit(&w->read);
}

void VolumeTargetImpl::OnResyncDone(ClientRequest* req) {
  static_cast<VolumeTargetImpl*>(req->ctx)->OnResyncReply(req);
}

// A replica failed during the resync: it is not HEALTHY any more (it is
// rebuilt later, like any replica that missed writes).
void VolumeTargetImpl::ResyncLost(ReplicaSlot* r, const Status& why) {
  if (r->state == ReplicaState::kHealthy) {
    r->state = ReplicaState::kFaulted;
    r->last_error = "activity-log resync: " + why.ToString();
    r->next_reconnect_ns = MonotonicNanos() + options_.reconnect_interval_ms * 1000000ull;
    replicas_.ScheduleClose(*r);
    TLOG_WARN(kTag, "volume '%s': replica %s FAULTED: %s", options_.volume_id.c_str(),
              r->Address().c_str(), r->last_error.c_str());
  }
}

void VolumeTargetImpl::OnResyncReply(ClientRequest* req) {
  Resync& rs = resync_;
  if (!rs.active || destroying_) return;
  if (req->status != StatusCode::kOk && req->wire_status == WireStatus::kStaleEpoch) {
    rs.active = false;
    Fence("a replica refused the activity-log resync: stale epoch");
    return;
  }
  if (req == &rs.req) {
    OnResyncMapReply(req);
    return;
  }
  for (ResyncWindow& w : rs.win) {
    if (req == &w.read) {
      OnResyncReadReply(&w);
      return;
    }
    for (ClientRequest& c : w.write) {
      if (req != &c) continue;
      if (req->status != StatusCode::kOk) {
        ResyncLost(&replicas_[static_cast<int>(&c - w.write)], Status(req->status, "WRITE failed"));
      } else {
        counters_.activity_resync_bytes += w.len;
      }
      if (--w.remaining == 0) {
        w.step = ResyncWindow::kFree;
        ResyncStep();
      }
      return;
    }
  }
  for (ClientRequest& f : rs.flush) {
    if (req != &f) continue;
    if (req->status != StatusCode::kOk) {
      ResyncLost(&replicas_[static_cast<int>(&f - rs.flush)], Status(req->status, "FLUSH failed"));
    }
    if (--rs.flush_remaining == 0) {
      rs.active = false;
      TLOG_INFO(kTag, "volume '%s': activity-log resync done: %llu bytes copied",
                options_.volume_id.c_str(),
                static_cast<unsigned long long>(counters_.activity_resync_bytes));
      if (replicas_.HealthyMask() == 0) {
        last_error_ = "every replica failed during the activity-log resync";
        state_ = TargetState::kFailed;
        loop_->Wake();
        return;
      }
      FinishStart();
    }
    return;
  }
}

// A page of one replica's activity log: its extents join the union.
void VolumeTargetImpl::OnResyncMapReply(ClientRequest* req) {
  Resync& rs = resync_;
  rs.req_busy = false;
  ReplicaSlot& r = replicas_[rs.map_replica];
  protocol::DirtyMapChunk chunk;
  Status st =
      req->status == StatusCode::kOk
          ? protocol::DecodeDirtyMap(
                std::string_view(reinterpret_cast<const char*>(rs.reply.data()), req->reply_length),
                &chunk)
          : Status(req->status, "GET_DIRTY_MAP (activity) failed");
  if (!st.ok()) {
    ResyncLost(&r, st);
    rs.map_offset = UINT64_MAX;  // on to the next replica
    ResyncStep();
    return;
  }
  if (rs.extent == 0) {
    rs.extent = chunk.region_size;
    rs.map.assign(protocol::DirtyMapBytes(size_, rs.extent), 0);
  }
  uint64_t first = rs.map_offset / chunk.region_size;  // a multiple of 8 regions
  for (size_t i = 0; i < chunk.bitmap.size(); ++i) {
    uint8_t b = static_cast<uint8_t>(chunk.bitmap[i]);
    for (int bit = 0; b != 0 && bit < 8; ++bit) {
      if ((b >> bit) & 1) ResyncMark((first + i * 8 + bit) * chunk.region_size, chunk.region_size);
    }
  }
  uint64_t covered = (first + chunk.bitmap.size() * 8) * chunk.region_size;
  rs.map_offset = (chunk.bitmap.empty() || covered >= size_) ? UINT64_MAX : covered;
  ResyncStep();
}

// A window was read from the source: write it to every other HEALTHY replica.
void VolumeTargetImpl::OnResyncReadReply(ResyncWindow* w) {
  if (w->read.status != StatusCode::kOk) {
    ResyncLost(&replicas_[w->read_from], Status(w->read.status, "READ failed"));
    IssueResyncRead(w);  // from another HEALTHY replica
    ResyncStep();
    return;
  }
  w->step = ResyncWindow::kWrite;
  w->remaining = 0;
  uint32_t mask = 0;
  for (ReplicaSlot& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kHealthy || r.index == w->read_from) continue;
    ClientRequest& c = w->write[r.index];
    c.op = Opcode::kWrite;
    c.flags = 0;
    c.offset = w->off;
    c.length = w->len;
    c.buf = w->buf.get();
    mask |= r.bit();
    ++w->remaining;
  }
  if (w->remaining == 0) {
    w->step = ResyncWindow::kFree;
    ResyncStep();
    return;
  }
  for (ReplicaSlot& r : replicas_) {
    if (mask & r.bit()) r.channel->Submit(&w->write[r.index]);
  }
}

}  // namespace tandem::target

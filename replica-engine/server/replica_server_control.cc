// ReplicaServer: management operations on a replica's metadata that must run
// on the loop thread (the owner of the replica's record and of the sessions
// that depend on it): FenceVolume and ResizeVolume. See replica_server.h.

#include <algorithm>
#include <future>

#include "common/logging.h"
#include "replica-engine/server/replica_port.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::server {

namespace {
constexpr const char* kTag = "replica_server";
}  // namespace

Status ReplicaServer::RunReplicaTask(const std::string& volume_id, ReplicaTaskFn fn) {
  if (!started_) {
    // No loop: nothing else touches the replica (the caller does not race
    // Start/Stop), so the step runs here, once.
    Result<std::shared_ptr<replica::Replica>> r = manager_->Get(volume_id);
    if (!r.ok()) return r.status();
    std::optional<Status> st = fn(r->get(), nullptr);
    return st.has_value() ? *st : Status::Unavailable("replica server not running");
  }
  std::promise<Status> done;
  std::future<Status> result = done.get_future();
  loop_.Post([this, &volume_id, &fn, &done] {
    replica_tasks_.push_back(ReplicaTask{volume_id, std::move(fn), &done});
    RunReplicaTasks();
  });
  return result.get();
}

void ReplicaServer::RunReplicaTasks() {
  // Index loop: a step never adds tasks, but may be retried next iteration.
  size_t keep = 0;
  for (size_t i = 0; i < replica_tasks_.size(); ++i) {
    ReplicaTask& t = replica_tasks_[i];
    std::optional<Status> st;
    if (stopping_) {
      st = Status::Unavailable("replica server stopping");
    } else if (manager_->IsDeleting(t.volume_id)) {
      // Checked in the same loop turn as the step, so a DeleteReplica's
      // Close() (after its detach, which runs on this loop) cannot overlap it.
      st = Status::NotFound("replica of volume " + t.volume_id + " is being deleted");
    } else {
      auto it = volumes_.find(t.volume_id);
      std::shared_ptr<replica::Replica> r;
      if (it != volumes_.end()) {
        r = it->second.replica;
      } else if (Result<std::shared_ptr<replica::Replica>> got = manager_->Get(t.volume_id);
                 got.ok()) {
        r = *got;
      } else {
        st = got.status();
      }
      // A synchronous metadata update would write the slot an asynchronous
      // persist is writing: wait for it (its completion wakes the loop).
      if (r != nullptr && !r->persist_in_flight()) {
        st = t.step(r.get(), it != volumes_.end() ? &it->second : nullptr);
      }
    }
    if (st.has_value()) {
      t.done->set_value(*st);
    } else {
      if (keep != i) replica_tasks_[keep] = std::move(t);
      ++keep;
    }
  }
  replica_tasks_.resize(keep);
}

Status ReplicaServer::FenceVolume(const std::string& volume_id, uint64_t epoch) {
  if (epoch == 0) return Status::InvalidArgument("fence epoch 0");
  return RunReplicaTask(
      volume_id, [this, epoch](replica::Replica* r, VolumeState* vol) -> std::optional<Status> {
        if (r->metadata().highest_epoch < epoch) {
          // Durable before anything else: after a restart the replica still
          // refuses every older target. No owner: the first target at this
          // epoch claims it, as after a fresh create.
          Status st = r->SetHighestEpoch(epoch, /*owner=*/0);
          if (!st.ok()) return st;
          TLOG_INFO(kTag, "volume '%s': fenced at epoch %llu", r->volume_id().c_str(),
                    static_cast<unsigned long long>(epoch));
        }
        if (vol != nullptr) {
          vol->highest_epoch = std::max(vol->highest_epoch, r->metadata().highest_epoch);
          // As an epoch-raising HELLO does: every older session is answered
          // STALE_EPOCH from now on, its parked writes never reach the disk.
          for (ReplicaPort* s : vol->ports) {
            if (s->epoch() < vol->highest_epoch && !s->superseded()) {
              ++stats_.sessions_fenced;
              s->Supersede();
            }
          }
        }
        // Answer only once no older session's I/O is still in flight on the
        // backend: none of it may land after the fence returned.
        for (const ReplicaPort* s : ports_) {
          if (s->replica().get() == r && s->epoch() < epoch && s->inflight() > 0)
            return std::nullopt;
        }
        return Status::Ok();
      });
}

Status ReplicaServer::ResizeVolume(const std::string& volume_id, uint64_t new_size) {
  return RunReplicaTask(
      volume_id, [this, new_size](replica::Replica* r, VolumeState*) -> std::optional<Status> {
        TANDEM_RETURN_IF_ERROR(r->Resize(new_size));
        // Ports check ranges against the size they saw at HELLO.
        for (ReplicaPort* p : ports_) {
          if (p->replica().get() == r) p->size_ = r->metadata().size;
        }
        return Status::Ok();
      });
}

}  // namespace tandem::server

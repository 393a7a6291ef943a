// EtcdStore's leader election: lease, keepalive thread, election key.

#include <grpcpp/grpcpp.h>

#include <thread>

#include "common/logging.h"
#include "controller/store/etcd_store.h"

namespace tandem::store {

namespace {

constexpr const char* kTag = "etcd_store";

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool EtcdStore::IsLeader() const {
  return leading_.load() && SteadyNowNs() < lease_valid_until_ns_.load();
}

Status EtcdStore::EnsureLease() {
  {
    MutexLock lock(&mu_);
    if (lease_id_ != 0 && SteadyNowNs() < lease_valid_until_ns_.load()) return Status::Ok();
  }
  DropLease(/*revoke=*/true);
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(options_.lease_ttl.count());
  etcdserverpb::LeaseGrantResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  const int64_t sent = SteadyNowNs();
  grpc::Status st = conn()->lease->LeaseGrant(&ctx, req, &resp);
  if (!st.ok()) return RpcError("lease grant", st);
  if (!resp.error().empty()) return Status::Unavailable("etcd lease grant: " + resp.error());
  {
    MutexLock lock(&mu_);
    lease_id_ = resp.id();
    lease_ttl_seconds_ = resp.ttl();
    lease_valid_until_ns_.store(sent + resp.ttl() * 1'000'000'000);
  }
  cv_.notify_all();  // start renewing
  return Status::Ok();
}

void EtcdStore::DropLease(bool revoke) {
  int64_t id;
  {
    MutexLock lock(&mu_);
    id = lease_id_;
    lease_id_ = 0;
    leading_.store(false);
    leader_create_revision_.store(0);
    lease_valid_until_ns_.store(0);
  }
  if (id == 0 || !revoke) return;
  // Revoking deletes the election key at once, so a successor does not wait
  // for the TTL. Best effort: if etcd is unreachable the lease expires.
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(id);
  etcdserverpb::LeaseRevokeResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  (void)conn()->lease->LeaseRevoke(&ctx, req, &resp);
}

Status EtcdStore::Campaign(std::chrono::milliseconds timeout) {
  MutexLock election(&election_mu_);
  if (IsLeader()) return Status::Ok();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    TANDEM_RETURN_IF_ERROR(EnsureLease());
    int64_t lease_id;
    {
      MutexLock lock(&mu_);
      lease_id = lease_id_;
    }
    // Create the election key bound to our lease if nobody holds it, else
    // read who does.
    etcdserverpb::TxnRequest req;
    auto* cmp = req.add_compare();
    cmp->set_key(election_key_);
    cmp->set_target(etcdserverpb::Compare::CREATE);
    cmp->set_result(etcdserverpb::Compare::EQUAL);
    cmp->set_create_revision(0);
    auto* put = req.add_success()->mutable_request_put();
    put->set_key(election_key_);
    put->set_value(options_.candidate_id);
    put->set_lease(lease_id);
    req.add_failure()->mutable_request_range()->set_key(election_key_);
    etcdserverpb::TxnResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    grpc::Status st = conn()->kv->Txn(&ctx, req, &resp);
    if (!st.ok()) return RpcError("campaign", st);
    int64_t create_revision = 0;
    if (resp.succeeded()) {
      create_revision = resp.header().revision();
    } else if (resp.responses_size() == 1 && resp.responses(0).response_range().kvs_size() == 1 &&
               resp.responses(0).response_range().kvs(0).lease() == lease_id) {
      // Already ours (an earlier Campaign of this lease won).
      create_revision = resp.responses(0).response_range().kvs(0).create_revision();
    }
    if (create_revision != 0) {
      leader_create_revision_.store(create_revision);
      leading_.store(true);
      TLOG_INFO(kTag, "%s leads (%s, lease ttl %lld s)", options_.candidate_id.c_str(),
                election_key_.c_str(), static_cast<long long>(lease_ttl_seconds_));
      return Status::Ok();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return Status::DeadlineExceeded("another controller leads (" + election_key_ + ")");
    }
    // Polling is enough: a successor needs the TTL to pass anyway, and a
    // resignation is seen within one interval.
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        std::chrono::milliseconds(100), deadline - now));
  }
}

Status EtcdStore::Resign() {
  MutexLock election(&election_mu_);
  DropLease(/*revoke=*/true);
  return Status::Ok();
}

Result<std::optional<std::string>> EtcdStore::Leader() {
  TANDEM_ASSIGN_OR_RETURN(std::optional<KeyValue> kv, Get(election_key_));
  if (!kv) return std::optional<std::string>();
  return std::optional<std::string>(kv->value);
}

bool EtcdStore::KeepAliveOnce(int64_t lease_id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  const int64_t sent = SteadyNowNs();
  std::shared_ptr<Connection> c = conn();
  auto stream = c->lease->LeaseKeepAlive(&ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(lease_id);
  etcdserverpb::LeaseKeepAliveResponse resp;
  bool got = stream->Write(req) && stream->WritesDone() && stream->Read(&resp);
  if (got) {
    // Drain so Finish does not wait on unread messages.
    etcdserverpb::LeaseKeepAliveResponse extra;
    while (stream->Read(&extra)) {
    }
  }
  grpc::Status st = stream->Finish();
  if (!got) {
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE) Reconnect();
    return true;  // unknown: the validity deadline decides
  }
  MutexLock lock(&mu_);
  if (lease_id_ != lease_id) return true;  // dropped meanwhile
  if (resp.ttl() <= 0) return false;       // expired on the server
  lease_valid_until_ns_.store(sent + resp.ttl() * 1'000'000'000);
  return true;
}

void EtcdStore::KeepAliveLoop() {
  auto next_compact = std::chrono::steady_clock::now() + options_.compact_interval;
  MutexLock lock(&mu_);
  while (!stop_) {
    if (lease_id_ == 0) {
      while (!stop_ && lease_id_ == 0) lock.Wait(&cv_);
      continue;
    }
    const int64_t id = lease_id_;
    const auto interval =
        std::chrono::milliseconds(std::max<int64_t>(100, lease_ttl_seconds_ * 1000 / 3));
    lock.Unlock();
    const bool alive = KeepAliveOnce(id);
    const bool expired_locally = SteadyNowNs() >= lease_valid_until_ns_.load();
    lock.Lock();
    if (lease_id_ == id && (!alive || expired_locally)) {
      // Leadership ends here at the latest; IsLeader() already said false.
      const bool was_leading = leading_.load();
      lease_id_ = 0;
      leading_.store(false);
      leader_create_revision_.store(0);
      lease_valid_until_ns_.store(0);
      if (was_leading) {
        TLOG_WARN(kTag, "%s lost leadership: lease %s", options_.candidate_id.c_str(),
                  alive ? "not renewed in time" : "expired on the server");
      }
      continue;
    }
    if (options_.compact_interval.count() > 0 && IsLeader() &&
        std::chrono::steady_clock::now() >= next_compact) {
      next_compact = std::chrono::steady_clock::now() + options_.compact_interval;
      lock.Unlock();
      CompactOnce();
      lock.Lock();
    }
    const auto wake_at = std::chrono::steady_clock::now() + interval;
    while (!stop_ && lease_id_ == id && lock.WaitUntil(&cv_, wake_at)) {
    }
  }
}

void EtcdStore::CompactOnce() {
  // The current revision, from a cheap read.
  etcdserverpb::RangeRequest probe;
  probe.set_key(election_key_);
  probe.set_count_only(true);
  etcdserverpb::RangeResponse head;
  grpc::ClientContext rctx;
  SetDeadline(&rctx);
  std::shared_ptr<Connection> c = conn();
  if (!c->kv->Range(&rctx, probe, &head).ok()) return;
  const int64_t target = head.header().revision() - options_.compact_keep_revisions;
  if (target <= compacted_revision_) return;
  etcdserverpb::CompactionRequest req;
  req.set_revision(target);
  etcdserverpb::CompactionResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status st = c->kv->Compact(&ctx, req, &resp);
  // OUT_OF_RANGE: already compacted further (by an operator or etcd's own
  // auto-compaction); nothing to do either way.
  if (st.ok() || st.error_code() == grpc::StatusCode::OUT_OF_RANGE) {
    compacted_revision_ = target;
  } else {
    TLOG_WARN(kTag, "compacting etcd history to revision %lld: %s", static_cast<long long>(target),
              st.error_message().c_str());
  }
}

}  // namespace tandem::store

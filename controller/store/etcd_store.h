#pragma once
// EtcdStore: MetadataStore on an etcd v3 cluster over its gRPC API, for
// clusters running several controller replicas.
//
// The KV calls map 1:1 onto etcd: Get/Range are linearizable Range requests,
// Txn is one etcd Txn (exists = create_revision > 0, absent =
// create_revision == 0, mod_revision == N), so revisions, versions and
// atomicity are etcd's own. gRPC UNAVAILABLE / DEADLINE_EXCEEDED become
// UNAVAILABLE; every RPC has StoreOptions::request_timeout as its deadline.
//
// History: etcd keeps every revision until compacted; the leader compacts
// every StoreOptions::compact_interval (from the keepalive thread).
//
// Leader election (etcd_store_election.cc): a lease of lease_ttl seconds,
// renewed by a keepalive thread every ttl/3; the leader holds the key
// "/tandem/election/<name>" bound to that lease (created only if absent).
// IsLeader() is true only until the last renewal's send time + the TTL the
// server granted, so this instance stops believing it leads no later than
// etcd can expire its lease. A require_leader Txn is nested inside a Txn that
// compares the election key's create_revision with ours, so a deposed leader
// can never write, whatever it believes.
//
// Endpoints: all-numeric "ip:port" lists use gRPC's pick_first over the list
// (failover to the next address); with host names only the first is used.

#include <grpcpp/security/credentials.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/thread_annotations.h"
#include "controller/store/metadata_store.h"
#include "controller/store/proto/etcd/rpc.grpc.pb.h"

namespace tandem::store {

class EtcdStore final : public MetadataStore {
 public:
  // Connects and checks that etcd answers within request_timeout (UNAVAILABLE if not).
  static Result<std::unique_ptr<EtcdStore>> Open(const std::vector<std::string>& endpoints,
                                                 const StoreOptions& options);
  // Resigns (revokes the lease, so a successor takes over at once) and
  // joins the keepalive thread.
  ~EtcdStore() override;

  std::string_view Backend() const override { return "etcd"; }
  Result<std::optional<KeyValue>> Get(std::string_view key) override;
  Result<RangeResult> Range(std::string_view prefix, std::string_view start_after,
                            size_t limit) override;
  Result<TxnResult> Txn(const TxnRequest& txn) override;

  Status Campaign(std::chrono::milliseconds timeout) override;
  Status Resign() override;
  bool IsLeader() const override;
  Result<std::optional<std::string>> Leader() override;
  // One etcd Watch stream per Watcher (etcd_watcher.h).
  Result<std::unique_ptr<Watcher>> Watch(std::string_view prefix, int64_t after_revision) override;

 private:
  // One gRPC channel and its stubs. Replaced (Reconnect) after UNAVAILABLE:
  // a gRPC 1.51 channel whose connection failed keeps failing fast for
  // seconds after etcd is back, whatever the backoff arguments say, while a
  // new channel (local subchannel pool) connects at once.
  struct Connection {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  };
  EtcdStore(std::string target, const StoreOptions& options,
            std::optional<grpc::SslCredentialsOptions> tls);
  std::shared_ptr<Connection> Connect() const;
  std::shared_ptr<Connection> conn() const;
  void Reconnect();
  void SetDeadline(grpc::ClientContext* ctx) const;
  // EtcdError; after UNAVAILABLE also Reconnect (at most every 500 ms).
  Status RpcError(std::string_view what, const grpc::Status& status);
  // Grants a lease if this instance has none.
  Status EnsureLease() REQUIRES(election_mu_);
  // Forgets the lease (best-effort revoke) and the leadership.
  void DropLease(bool revoke);
  void KeepAliveLoop();
  bool KeepAliveOnce(int64_t lease_id);
  // Compacts history older than compact_keep_revisions (leader only).
  void CompactOnce();

  const StoreOptions options_;
  const std::string election_key_;
  const std::string target_;
  // Plain text when tls_ is empty; PEM contents read at Open.
  std::optional<grpc::SslCredentialsOptions> tls_;
  mutable Mutex conn_mu_;
  std::shared_ptr<Connection> conn_ GUARDED_BY(conn_mu_);
  std::chrono::steady_clock::time_point last_reconnect_ GUARDED_BY(conn_mu_);

  Mutex election_mu_;  // serializes Campaign / Resign
  Mutex mu_;
  std::condition_variable cv_;  // wakes the keepalive thread
  int64_t lease_id_ GUARDED_BY(mu_) = 0;
  int64_t lease_ttl_seconds_ = 0;  // written under mu_ and election_mu_
  bool stop_ GUARDED_BY(mu_) = false;

  std::atomic<bool> leading_{false};
  // steady_clock nanoseconds until which the lease is certainly alive.
  std::atomic<int64_t> lease_valid_until_ns_{0};
  std::atomic<int64_t> leader_create_revision_{0};
  int64_t compacted_revision_ = 0;  // keepalive thread only
  std::thread keepalive_;
};

// etcd's gRPC errors as our Status (UNAVAILABLE for unreachable / timed out).
Status EtcdError(std::string_view what, const grpc::Status& status);

}  // namespace tandem::store

#pragma once
// MetadataStore: the controller's cluster metadata, behind one interface.
//
// A versioned key-value store shaped like etcd v3 (and the Kubernetes API
// server on top of it), so the two backends have the same semantics:
//   - SQLite in a local directory (the embedded default, one controller):
//       OpenStore("sqlite:///var/lib/tandem/controller")
//   - etcd v3 over gRPC (clusters, several controller replicas):
//       OpenStore("etcd://127.0.0.1:2379,10.0.0.2:2379")
// docs/metadata_store.md has the key layout convention, durability and the
// leader election.
//
// Data model
//   - Keys are byte strings ordered bytewise; the controller uses prefixes
//     such as "/tandem/volumes/<name>". Keys are non-empty. Values are bytes
//     (any content, up to kMaxValueBytes).
//   - The store has one revision counter. Every successful Txn that changes
//     something (a Put, or a Delete of an existing key) advances it by one
//     and stamps the keys it writes: mod_revision = the new revision;
//     create_revision = the revision at which the key was (re)created;
//     version = number of Puts since it was created (1 after creation).
//     Revisions only grow, also across restarts, and are never reused, so
//     "mod_revision == N" is a safe compare-and-swap token.
//
// Errors (Status codes are gRPC's)
//   - UNAVAILABLE: the store cannot be reached (etcd down or no quorum, SQLite
//     busy beyond the busy timeout); nothing was changed, or, for a Txn, the
//     outcome is unknown only if the connection broke after it was sent
//     (etcd) — callers retry with compares that make the retry safe.
//   - INVALID_ARGUMENT: empty key, value or whole Txn too large, a key
//     written twice in one Txn, malformed request.
//   - FAILED_PRECONDITION: a Txn with require_leader while this instance does
//     not hold the leadership (it was lost, resigned or never won).
//   - A Txn whose compares do not hold is NOT an error: it returns OK with
//     TxnResult::succeeded == false and changes nothing (etcd's semantics;
//     the caller decides whether that means ALREADY_EXISTS, ABORTED, ...).
//     TxnResult::FailedAsAborted() turns it into ABORTED when that is wanted.
//   - DATA_LOSS / INTERNAL: the on-disk database is corrupt / a bug.
//
// Thread-safety: every method may be called from any thread concurrently.
// Several store instances (even in different processes) may share one SQLite
// directory or one etcd cluster; Txn is atomic and serializable across all.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/status.h"

namespace tandem::store {

// etcd's default request limit is 1.5 MiB; a value stays below it with room
// for the key and the request framing.
inline constexpr size_t kMaxValueBytes = 1400 * 1024;
inline constexpr size_t kMaxKeyBytes = 4096;
// The same bound on a whole Txn (keys + values of its ops), for the same reason.
inline constexpr size_t kMaxTxnBytes = 1400 * 1024;

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
};

struct RangeResult {
  std::vector<KeyValue> kvs;  // ascending by key
  bool more = false;          // more keys match beyond the last one returned
  int64_t revision = 0;       // the store revision the read was served at
};

// One condition of a Txn; all of a Txn's compares must hold for it to apply.
struct Compare {
  enum class Kind { kExists, kAbsent, kModRevisionEquals };
  Kind kind = Kind::kExists;
  std::string key;
  int64_t mod_revision = 0;  // kModRevisionEquals only

  static Compare Exists(std::string_view k) { return {Kind::kExists, std::string(k), 0}; }
  static Compare Absent(std::string_view k) { return {Kind::kAbsent, std::string(k), 0}; }
  static Compare ModRevisionEquals(std::string_view k, int64_t rev) {
    return {Kind::kModRevisionEquals, std::string(k), rev};
  }
};

// One write of a Txn. Ops apply in order; a key may appear once only.
struct Op {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;  // kPut only

  static Op Put(std::string_view k, std::string_view v) {
    return {Kind::kPut, std::string(k), std::string(v)};
  }
  static Op Delete(std::string_view k) { return {Kind::kDelete, std::string(k), {}}; }
};

struct TxnRequest {
  std::vector<Compare> compares;
  std::vector<Op> ops;
  // Apply only while this instance is the elected leader (see Campaign);
  // otherwise FAILED_PRECONDITION and nothing changes. On etcd the check is
  // part of the same atomic transaction, so a deposed leader whose lease
  // expired can never write, even if it does not know yet.
  bool require_leader = false;
};

struct TxnResult {
  bool succeeded = false;  // all compares held and the ops were applied
  int64_t revision = 0;    // store revision after the txn (unchanged if it did not apply)

  // OK if succeeded, else ABORTED naming `what`.
  Status FailedAsAborted(std::string_view what) const {
    return succeeded ? Status::Ok() : Status::Aborted(std::string(what) + ": compare failed");
  }
};

// One change seen by a Watcher.
struct WatchEvent {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  // kPut: the key as written. kDelete: key, and mod_revision = the revision
  // of the delete; value empty, create_revision and version 0 (as etcd).
  KeyValue kv;
};

// A stream of the changes under one prefix, in revision order (within one
// revision the order is unspecified). Owned by one thread at a time.
class Watcher {
 public:
  virtual ~Watcher() = default;
  // Waits up to `timeout` for changes; returns those that arrived (empty
  // when the timeout passed first). OUT_OF_RANGE: the history the watcher
  // needs was compacted (re-read with Range, then watch from its revision).
  // UNAVAILABLE: the store was lost; this Watcher is done, open a new one
  // after the last revision seen.
  virtual Result<std::vector<WatchEvent>> Next(std::chrono::milliseconds timeout) = 0;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  // "sqlite" or "etcd", for logs and Probe messages.
  virtual std::string_view Backend() const = 0;

  // The key, or std::nullopt when it does not exist (not an error).
  virtual Result<std::optional<KeyValue>> Get(std::string_view key) = 0;

  // Keys starting with `prefix` and greater than `start_after` (empty: from
  // the first), ascending, at most `limit` of them (0: no limit). Paging:
  // pass the last key returned as the next start_after while `more`.
  virtual Result<RangeResult> Range(std::string_view prefix, std::string_view start_after,
                                    size_t limit) = 0;

  // Atomically: if every compare holds, apply every op; else change nothing.
  virtual Result<TxnResult> Txn(const TxnRequest& txn) = 0;

  // Convenience single-key writes (unconditional, one Txn each).
  Result<TxnResult> Put(std::string_view key, std::string_view value) {
    return Txn({.compares = {}, .ops = {Op::Put(key, value)}});
  }
  Result<TxnResult> Delete(std::string_view key) {
    return Txn({.compares = {}, .ops = {Op::Delete(key)}});
  }

  // --- Leader election among the controllers sharing this store ---------
  //
  // Campaign blocks until this instance leads (OK), `timeout` passes
  // (DEADLINE_EXCEEDED; call again) or the store is unreachable
  // (UNAVAILABLE). Campaigning again while leading is OK at once.
  //   etcd: a lease with StoreOptions::lease_ttl, kept alive by a thread;
  //     the leader holds the election key, bound to that lease. When the
  //     lease cannot be renewed (etcd unreachable, process frozen) IsLeader
  //     turns false before the lease can expire on the server, and another
  //     contender takes over within the TTL after the leader died.
  //   sqlite: an exclusive flock on <dir>/leader.lock; the kernel drops it
  //     when the process dies, so two controllers on one directory never
  //     lead together and the survivor takes over at once.
  virtual Status Campaign(std::chrono::milliseconds timeout) = 0;
  // Gives up leadership (idempotent; OK when not leading).
  virtual Status Resign() = 0;
  // True while this instance leads. Cheap; callable from any thread.
  virtual bool IsLeader() const = 0;
  // The candidate id of the current leader (any instance), or std::nullopt.
  virtual Result<std::optional<std::string>> Leader() = 0;

  // --- Watch -----------------------------------------------------------------
  //
  // Changes to keys starting with `prefix` at revisions > after_revision
  // (0: from now on). History goes back compact_keep_revisions (StoreOptions)
  // revisions; older is OUT_OF_RANGE, from Watch or from the Watcher's Next.
  // etcd: a Watch stream; sqlite: an event table written in each Txn's
  // transaction, polled (so changes by other processes are seen too).
  virtual Result<std::unique_ptr<Watcher>> Watch(std::string_view prefix,
                                                 int64_t after_revision) = 0;

 protected:
  MetadataStore() = default;
};

struct StoreOptions {
  // Identifies this instance in the election (the leader key's value):
  // defaults to "<hostname>-<pid>".
  std::string candidate_id;
  // Election name: etcd key "/tandem/election/<name>", SQLite lock file
  // "<dir>/<name>.lock" (the default gives "leader.lock").
  std::string election_name = "leader";
  // etcd lease TTL; a dead leader is replaced within about this long.
  std::chrono::seconds lease_ttl{10};
  // Per-RPC deadline for etcd; SQLite busy timeout.
  std::chrono::milliseconds request_timeout{5000};
  // etcd over TLS: tls_ca_file is the CA (PEM) that signed etcd's server
  // certificate; tls_cert_file + tls_key_file add a client certificate (for
  // etcd's --client-cert-auth). All empty: plain text. The files are read
  // once, at OpenStore.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // etcd keeps every old revision until compacted. While this instance
  // leads it compacts every compact_interval, keeping the newest
  // compact_keep_revisions (kube-apiserver does the same); 0s disables.
  // SQLite keeps Watch history for compact_keep_revisions revisions, pruned
  // at every Txn.
  std::chrono::seconds compact_interval{300};
  int64_t compact_keep_revisions = 10000;
};

// Opens the store named by `uri`:
//   sqlite:///abs/dir           directory created if missing (db: <dir>/metadata.db)
//   etcd://host:port[,host:port...]   gRPC (TLS when options.tls_ca_file is set); fails over
//                                     between numeric endpoints
// INVALID_ARGUMENT for a malformed uri, UNAVAILABLE when etcd cannot be
// reached within request_timeout, an I/O error code if the directory cannot
// be used.
Result<std::unique_ptr<MetadataStore>> OpenStore(std::string_view uri,
                                                 const StoreOptions& options = {});

}  // namespace tandem::store

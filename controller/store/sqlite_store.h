#pragma once
// SqliteStore: the embedded MetadataStore, one SQLite database in a local
// directory (<dir>/metadata.db), for a controller without etcd.
//
// Durability: WAL journal with synchronous=FULL, so a Txn that returned OK is
// on disk (the WAL is fsynced at every commit) and survives kill -9 and power
// loss; every Txn runs inside one SQLite transaction (BEGIN IMMEDIATE ...
// COMMIT; concurrent Txns of one instance share it, each in its own
// SAVEPOINT: group commit), so no partial Txn is ever visible, to readers or
// after a crash.
//
// Each instance has two connections: one writer (Txn) and one reader (Get,
// Range, Watch); in WAL mode a reader never waits for the writer, so reads do
// not queue behind a commit's fdatasync.
//
// Several SqliteStore instances (threads or processes) may open one directory;
// SQLite's file locks serialize their writes, and a writer waits up to
// StoreOptions::request_timeout for the lock before answering UNAVAILABLE.
//
// Leadership: an exclusive flock on <dir>/<election_name>.lock, held until
// Resign or until the process dies (the kernel releases it), so two
// controllers on one directory never both lead. The lock file holds the
// leader's candidate id for Leader().

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/thread_annotations.h"
#include "controller/store/metadata_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace tandem::store {

class SqliteStore final : public MetadataStore {
 public:
  // Creates `dir` if missing and opens (or creates) its database.
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& dir,
                                                   const StoreOptions& options);
  ~SqliteStore() override;

  std::string_view Backend() const override { return "sqlite"; }
  Result<std::optional<KeyValue>> Get(std::string_view key) override;
  Result<RangeResult> Range(std::string_view prefix, std::string_view start_after,
                            size_t limit) override;
  Result<TxnResult> Txn(const TxnRequest& txn) override;

  Status Campaign(std::chrono::milliseconds timeout) override;
  Status Resign() override;
  bool IsLeader() const override { return leader_fd_.load() >= 0; }
  Result<std::optional<std::string>> Leader() override;
  // The returned Watcher must not outlive this store.
  Result<std::unique_ptr<Watcher>> Watch(std::string_view prefix, int64_t after_revision) override;

  // Events under `prefix` after revision `after` (OUT_OF_RANGE if pruned).
  // For SqliteWatcher.
  Result<std::vector<WatchEvent>> ReadEvents(const std::string& prefix, int64_t after);

 private:
  struct Statements;
  SqliteStore(std::string dir, const StoreOptions& options);
  Status Init();
  // On `db` (default: the writer connection).
  Status Exec(const char* sql, sqlite3* db = nullptr);
  // `db`'s last error message, the code mapped to ours.
  Status SqliteError(std::string_view context, int rc, sqlite3* db = nullptr) const;
  Status PrepareStatements(sqlite3* db, Statements* st);
  Result<int64_t> ReadRevision(Statements* st, sqlite3* db);
  // Applies `txn` inside an open write transaction.
  Result<TxnResult> ApplyLocked(const TxnRequest& txn) REQUIRES(mu_);
  // OK while this instance holds a lock on the current lock file.
  Status CheckLeader();

  // A Txn waiting in the group-commit queue (see Txn in sqlite_store.cc).
  struct PendingTxn {
    const TxnRequest* txn = nullptr;
    Result<TxnResult> result = Status::Internal("not applied");
    bool done = false;  // guarded by queue_mu_
    std::condition_variable cv;
  };
  static constexpr size_t kMaxGroup = 64;
  // Applies and commits `group` in one SQLite transaction; sets each result.
  void ApplyGroup(const std::vector<PendingTxn*>& group);

  const std::string dir_;
  const std::string lock_path_;
  const StoreOptions options_;

  Mutex mu_;  // serializes use of db_ and stmts_ (writes)
  sqlite3* db_ = nullptr;
  std::unique_ptr<Statements> stmts_;
  Mutex rmu_;  // serializes use of rdb_ and rstmts_ (reads)
  sqlite3* rdb_ = nullptr;
  std::unique_ptr<Statements> rstmts_;

  Mutex queue_mu_;                                       // guards queue_ and PendingTxn::done
  std::deque<PendingTxn*> queue_ GUARDED_BY(queue_mu_);  // the front one leads the next group

  Mutex election_mu_;               // serializes Campaign / Resign
  std::atomic<int> leader_fd_{-1};  // the flocked lock file while leading
};

}  // namespace tandem::store

// size: one SQLite store (schema, statements, group commit, reads, watch, election); the
// statement set and its users change together.
#include "controller/store/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "controller/store/txn_validation.h"

namespace tandem::store {

namespace {

// Keys and values are BLOBs: SQLite orders BLOBs with memcmp, which is the
// bytewise key order etcd uses, and a BLOB holds any bytes.
constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS kv("
    "  key BLOB PRIMARY KEY NOT NULL,"
    "  value BLOB NOT NULL,"
    "  create_revision INTEGER NOT NULL,"
    "  mod_revision INTEGER NOT NULL,"
    "  version INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);"
    // etcd starts at revision 1 too; the first write makes it 2.
    "INSERT OR IGNORE INTO meta(name, value) VALUES('revision', 1);"
    // Watch history: one row per changed key per revision (kind 0 put, 1
    // delete), pruned to the newest compact_keep_revisions; 'compacted' is
    // the newest revision pruned.
    "CREATE TABLE IF NOT EXISTS events("
    "  revision INTEGER NOT NULL,"
    "  key BLOB NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  value BLOB NOT NULL,"
    "  create_revision INTEGER NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  PRIMARY KEY(revision, key)) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO meta(name, value) VALUES('compacted', 0);";

// Resets a statement (and its bindings) when the scope ends, so a cached
// statement never keeps a read transaction open.
class StmtReset {
 public:
  explicit StmtReset(sqlite3_stmt* s) : s_(s) {}
  ~StmtReset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtReset(const StmtReset&) = delete;
  StmtReset& operator=(const StmtReset&) = delete;

 private:
  sqlite3_stmt* s_;
};

void BindBlob(sqlite3_stmt* s, int index, std::string_view bytes) {
  if (bytes.empty()) {
    // A NULL pointer would bind SQL NULL, which compares with nothing.
    sqlite3_bind_zeroblob(s, index, 0);
  } else {
    sqlite3_bind_blob(s, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
}

std::string ColumnBlob(sqlite3_stmt* s, int col) {
  const void* p = sqlite3_column_blob(s, col);
  int n = sqlite3_column_bytes(s, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

KeyValue ReadRow(sqlite3_stmt* s) {
  KeyValue kv;
  kv.key = ColumnBlob(s, 0);
  kv.value = ColumnBlob(s, 1);
  kv.create_revision = sqlite3_column_int64(s, 2);
  kv.mod_revision = sqlite3_column_int64(s, 3);
  kv.version = sqlite3_column_int64(s, 4);
  return kv;
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open " + dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? Status::Ok() : PosixError("fsync " + dir, err);
}

// True when `fd` is still the file at `path`: a lock on a file that was
// deleted or replaced locks nothing anybody else will look at.
bool SameFile(int fd, const std::string& path) {
  struct stat by_fd {
  }, by_path{};
  return ::fstat(fd, &by_fd) == 0 && ::stat(path.c_str(), &by_path) == 0 &&
         by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

}  // namespace

struct SqliteStore::Statements {
  sqlite3_stmt* get = nullptr;
  sqlite3_stmt* range_bounded = nullptr;
  sqlite3_stmt* range_open = nullptr;
  sqlite3_stmt* upsert = nullptr;
  sqlite3_stmt* del = nullptr;
  sqlite3_stmt* rev_get = nullptr;
  sqlite3_stmt* rev_set = nullptr;
  sqlite3_stmt* event_insert = nullptr;
  sqlite3_stmt* events_prune = nullptr;
  sqlite3_stmt* compacted_get = nullptr;
  sqlite3_stmt* compacted_set = nullptr;
  sqlite3_stmt* events_bounded = nullptr;
  sqlite3_stmt* events_open = nullptr;

  ~Statements() {
    for (sqlite3_stmt* s :
         {get, range_bounded, range_open, upsert, del, rev_get, rev_set, event_insert, events_prune,
          compacted_get, compacted_set, events_bounded, events_open}) {
      sqlite3_finalize(s);
    }
  }
};

SqliteStore::SqliteStore(std::string dir, const StoreOptions& options)
    : dir_(std::move(dir)),
      lock_path_(dir_ + "/" + options.election_name + ".lock"),
      options_(options) {}

SqliteStore::~SqliteStore() {
  (void)Resign();
  stmts_.reset();
  rstmts_.reset();
  if (db_ != nullptr) sqlite3_close_v2(db_);
  if (rdb_ != nullptr) sqlite3_close_v2(rdb_);
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& dir,
                                                       const StoreOptions& options) {
  if (dir.empty() || dir[0] != '/') {
    return Status::InvalidArgument("sqlite store directory must be an absolute path: " + dir);
  }
  if (::mkdir(dir.c_str(), 0700) == 0) {
    // A new directory's entry must survive power loss like its contents.
    const std::string parent = dir.substr(0, std::max<size_t>(1, dir.find_last_of('/')));
    TANDEM_RETURN_IF_ERROR(SyncDir(parent));
  } else if (errno != EEXIST) {
    return PosixError("mkdir " + dir, errno);
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(dir, options));
  TANDEM_RETURN_IF_ERROR(store->Init());
  return store;
}

Status SqliteStore::SqliteError(std::string_view context, int rc, sqlite3* db) const {
  if (db == nullptr) db = db_;
  std::string msg = "sqlite " + std::string(context) + " (" + dir_ +
                    "): " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::DataLoss(msg);
    case SQLITE_FULL:
      return Status::ResourceExhausted(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
      return Status::PermissionDenied(msg);
    default:
      return Status::Internal(msg);
  }
}

Status SqliteStore::Exec(const char* sql, sqlite3* db) {
  if (db == nullptr) db = db_;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::Ok() : SqliteError(sql, rc, db);
}

Status SqliteStore::Init() {
  const std::string path = dir_ + "/metadata.db";
  int rc =
      sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return SqliteError("open " + path, rc);
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, static_cast<int>(options_.request_timeout.count()));

  // WAL: readers never block the writer and a commit is one sequential
  // append; synchronous=FULL fsyncs the WAL at every commit, which is what
  // makes an acknowledged Txn survive power loss (NORMAL would not).
  sqlite3_stmt* s = nullptr;
  rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &s, nullptr);
  if (rc != SQLITE_OK) return SqliteError("PRAGMA journal_mode", rc);
  std::string mode;
  if (sqlite3_step(s) == SQLITE_ROW) {
    mode = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
  }
  sqlite3_finalize(s);
  if (mode != "wal") {
    return Status::FailedPrecondition("sqlite at " + path + " refused WAL mode (got '" + mode +
                                      "'); is the directory on a network file system?");
  }
  TANDEM_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
  TANDEM_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status st = Exec(kSchema);
  if (!st.ok()) {
    (void)Exec("ROLLBACK");
    return st;
  }
  TANDEM_RETURN_IF_ERROR(Exec("COMMIT"));
  // SQLite syncs the directory for the journal files it creates but not for
  // the database file itself: make a new metadata.db's name durable too.
  TANDEM_RETURN_IF_ERROR(SyncDir(dir_));

  stmts_ = std::make_unique<Statements>();
  TANDEM_RETURN_IF_ERROR(PrepareStatements(db_, stmts_.get()));

  // A second connection for reads (Get, Range, Watch): in WAL mode readers
  // never wait for the writer, so a read does not queue behind a group
  // commit's fdatasync. query_only: this connection never writes.
  rc = sqlite3_open_v2(path.c_str(), &rdb_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return SqliteError("open (reader) " + path, rc, rdb_);
  sqlite3_extended_result_codes(rdb_, 1);
  sqlite3_busy_timeout(rdb_, static_cast<int>(options_.request_timeout.count()));
  TANDEM_RETURN_IF_ERROR(Exec("PRAGMA query_only=1", rdb_));
  rstmts_ = std::make_unique<Statements>();
  TANDEM_RETURN_IF_ERROR(PrepareStatements(rdb_, rstmts_.get()));
  return Status::Ok();
}

Status SqliteStore::PrepareStatements(sqlite3* db, Statements* st) {
  int rc = SQLITE_OK;
  struct {
    sqlite3_stmt** slot;
    const char* sql;
  } prepared[] = {
      {&st->get,
       "SELECT key, value, create_revision, mod_revision, version FROM kv WHERE key = ?1"},
      {&st->range_bounded,
       "SELECT key, value, create_revision, mod_revision, version FROM kv "
       "WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3"},
      {&st->range_open,
       "SELECT key, value, create_revision, mod_revision, version FROM kv "
       "WHERE key >= ?1 ORDER BY key LIMIT ?3"},
      {&st->upsert,
       "INSERT INTO kv(key, value, create_revision, mod_revision, version) "
       "VALUES(?1, ?2, ?3, ?3, 1) ON CONFLICT(key) DO UPDATE SET "
       "value = excluded.value, mod_revision = excluded.mod_revision, version = version + 1 "
       "RETURNING create_revision, version"},
      {&st->del, "DELETE FROM kv WHERE key = ?1"},
      {&st->rev_get, "SELECT value FROM meta WHERE name = 'revision'"},
      {&st->rev_set, "UPDATE meta SET value = ?1 WHERE name = 'revision'"},
      {&st->event_insert,
       "INSERT INTO events(revision, key, kind, value, create_revision, version) "
       "VALUES(?1, ?2, ?3, ?4, ?5, ?6)"},
      {&st->events_prune, "DELETE FROM events WHERE revision <= ?1"},
      {&st->compacted_get, "SELECT value FROM meta WHERE name = 'compacted'"},
      {&st->compacted_set, "UPDATE meta SET value = ?1 WHERE name = 'compacted' AND value < ?1"},
      {&st->events_bounded,
       "SELECT revision, key, kind, value, create_revision, version FROM events "
       "WHERE revision > ?1 AND key >= ?2 AND key < ?3 ORDER BY revision, key"},
      {&st->events_open,
       "SELECT revision, key, kind, value, create_revision, version FROM events "
       "WHERE revision > ?1 AND key >= ?2 ORDER BY revision, key"},
  };
  for (auto& p : prepared) {
    rc = sqlite3_prepare_v3(db, p.sql, -1, SQLITE_PREPARE_PERSISTENT, p.slot, nullptr);
    if (rc != SQLITE_OK) return SqliteError(p.sql, rc, db);
  }
  return Status::Ok();
}

Result<int64_t> SqliteStore::ReadRevision(Statements* st, sqlite3* db) {
  StmtReset reset(st->rev_get);
  int rc = sqlite3_step(st->rev_get);
  if (rc != SQLITE_ROW) return SqliteError("read revision", rc, db);
  return static_cast<int64_t>(sqlite3_column_int64(st->rev_get, 0));
}

Result<std::optional<KeyValue>> SqliteStore::Get(std::string_view key) {
  TANDEM_RETURN_IF_ERROR(ValidateKey(key));
  MutexLock lock(&rmu_);
  StmtReset reset(rstmts_->get);
  BindBlob(rstmts_->get, 1, key);
  int rc = sqlite3_step(rstmts_->get);
  if (rc == SQLITE_DONE) return std::optional<KeyValue>();
  if (rc != SQLITE_ROW) return SqliteError("get", rc, rdb_);
  return std::optional<KeyValue>(ReadRow(rstmts_->get));
}

Result<RangeResult> SqliteStore::Range(std::string_view prefix, std::string_view start_after,
                                       size_t limit) {
  // Lower bound: the prefix itself, or just past start_after if that is later.
  std::string lo(prefix);
  if (!start_after.empty()) {
    std::string after = std::string(start_after) + '\0';
    if (after > lo) lo = std::move(after);
  }
  const std::string hi = PrefixEnd(prefix);

  MutexLock lock(&rmu_);
  // One read transaction, so the rows and the revision are one snapshot.
  TANDEM_RETURN_IF_ERROR(Exec("BEGIN", rdb_));
  RangeResult out;
  Status st = [&]() -> Status {
    TANDEM_ASSIGN_OR_RETURN(out.revision, ReadRevision(rstmts_.get(), rdb_));
    sqlite3_stmt* s = hi.empty() ? rstmts_->range_open : rstmts_->range_bounded;
    StmtReset reset(s);
    BindBlob(s, 1, lo);
    if (!hi.empty()) BindBlob(s, 2, hi);
    // One row more than asked tells whether there are more.
    sqlite3_bind_int64(s, 3, limit == 0 ? -1 : static_cast<int64_t>(limit) + 1);
    for (;;) {
      int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteError("range", rc, rdb_);
      if (limit != 0 && out.kvs.size() == limit) {
        out.more = true;
        break;
      }
      out.kvs.push_back(ReadRow(s));
    }
    return Status::Ok();
  }();
  (void)Exec("COMMIT", rdb_);
  if (!st.ok()) return st;
  return out;
}

Result<TxnResult> SqliteStore::ApplyLocked(const TxnRequest& txn) {
  TANDEM_ASSIGN_OR_RETURN(int64_t revision, ReadRevision(stmts_.get(), db_));
  for (const Compare& c : txn.compares) {
    StmtReset reset(stmts_->get);
    BindBlob(stmts_->get, 1, c.key);
    int rc = sqlite3_step(stmts_->get);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError("compare", rc);
    const bool exists = rc == SQLITE_ROW;
    bool holds = false;
    switch (c.kind) {
      case Compare::Kind::kExists:
        holds = exists;
        break;
      case Compare::Kind::kAbsent:
        holds = !exists;
        break;
      case Compare::Kind::kModRevisionEquals:
        // An absent key has mod_revision 0, as in etcd.
        holds = (exists ? sqlite3_column_int64(stmts_->get, 3) : 0) == c.mod_revision;
        break;
    }
    if (!holds) return TxnResult{.succeeded = false, .revision = revision};
  }

  const int64_t next = revision + 1;
  bool changed = false;
  for (const Op& op : txn.ops) {
    sqlite3_stmt* s = op.kind == Op::Kind::kPut ? stmts_->upsert : stmts_->del;
    StmtReset reset(s);
    BindBlob(s, 1, op.key);
    if (op.kind == Op::Kind::kPut) {
      BindBlob(s, 2, op.value);
      sqlite3_bind_int64(s, 3, next);
    }
    int rc = sqlite3_step(s);
    int64_t create_revision = 0, version = 0;
    if (op.kind == Op::Kind::kPut) {
      if (rc != SQLITE_ROW) return SqliteError("put", rc);
      create_revision = sqlite3_column_int64(s, 0);
      version = sqlite3_column_int64(s, 1);
      rc = sqlite3_step(s);
    }
    if (rc != SQLITE_DONE) return SqliteError(op.kind == Op::Kind::kPut ? "put" : "delete", rc);
    // Like etcd: a delete of a missing key is not a change (and no event).
    if (op.kind == Op::Kind::kDelete && sqlite3_changes(db_) == 0) continue;
    changed = true;
    StmtReset reset_event(stmts_->event_insert);
    sqlite3_bind_int64(stmts_->event_insert, 1, next);
    BindBlob(stmts_->event_insert, 2, op.key);
    sqlite3_bind_int(stmts_->event_insert, 3, op.kind == Op::Kind::kPut ? 0 : 1);
    BindBlob(stmts_->event_insert, 4, op.kind == Op::Kind::kPut ? op.value : std::string_view());
    sqlite3_bind_int64(stmts_->event_insert, 5, create_revision);
    sqlite3_bind_int64(stmts_->event_insert, 6, version);
    rc = sqlite3_step(stmts_->event_insert);
    if (rc != SQLITE_DONE) return SqliteError("record event", rc);
  }
  if (!changed) return TxnResult{.succeeded = true, .revision = revision};
  // Keep compact_keep_revisions of watch history (one index range delete).
  const int64_t prune_to = next - std::max<int64_t>(1, options_.compact_keep_revisions);
  if (prune_to > 0) {
    for (sqlite3_stmt* st : {stmts_->events_prune, stmts_->compacted_set}) {
      StmtReset reset_prune(st);
      sqlite3_bind_int64(st, 1, prune_to);
      int prc = sqlite3_step(st);
      if (prc != SQLITE_DONE) return SqliteError("prune events", prc);
    }
  }
  StmtReset reset(stmts_->rev_set);
  sqlite3_bind_int64(stmts_->rev_set, 1, next);
  int rc = sqlite3_step(stmts_->rev_set);
  if (rc != SQLITE_DONE) return SqliteError("set revision", rc);
  return TxnResult{.succeeded = true, .revision = next};
}

Status SqliteStore::CheckLeader() {
  int fd = leader_fd_.load();
  if (fd < 0) {
    return Status::FailedPrecondition("this controller is not the leader (sqlite store " + dir_ +
                                      ")");
  }
  if (!SameFile(fd, lock_path_)) {
    // Someone removed or replaced the lock file: another controller can now
    // lock the new one, so this one must stop leading.
    (void)Resign();
    return Status::FailedPrecondition("leadership lost: " + lock_path_ + " was replaced");
  }
  return Status::Ok();
}

// Group commit (leveldb's writer queue): concurrent Txns queue up; the one at
// the front applies every queued Txn in one SQLite transaction, each inside
// its own SAVEPOINT (so a failed compare or error undoes only that Txn), and
// commits once: one fdatasync for the whole group instead of one per Txn.
// Each Txn still gets its own revision, in queue order, and nobody is
// answered before the COMMIT that made its Txn durable returned.
Result<TxnResult> SqliteStore::Txn(const TxnRequest& txn) {
  TANDEM_RETURN_IF_ERROR(ValidateTxn(txn));
  PendingTxn self{.txn = &txn};
  MutexLock queue_lock(&queue_mu_);
  queue_.push_back(&self);
  while (!self.done && queue_.front() != &self) queue_lock.Wait(&self.cv);
  if (self.done) return std::move(self.result);

  // This thread leads the group: everything queued so far (bounded, so one
  // group's transaction stays short).
  std::vector<PendingTxn*> group;
  for (PendingTxn* p : queue_) {
    group.push_back(p);
    if (group.size() == kMaxGroup) break;
  }
  queue_lock.Unlock();
  ApplyGroup(group);
  queue_lock.Lock();
  for (PendingTxn* p : group) {
    queue_.pop_front();
    p->done = true;
    if (p != &self) p->cv.notify_one();
  }
  if (!queue_.empty()) queue_.front()->cv.notify_one();
  return std::move(self.result);
}

void SqliteStore::ApplyGroup(const std::vector<PendingTxn*>& group) {
  MutexLock lock(&mu_);
  // IMMEDIATE takes the write lock up front: compares and writes then see
  // one state, and another instance's writer waits (busy timeout) instead of
  // failing at COMMIT with a stale read.
  Status begin = Exec("BEGIN IMMEDIATE");
  if (!begin.ok()) {
    for (PendingTxn* p : group) p->result = begin;
    return;
  }
  bool any_change = false;
  for (PendingTxn* p : group) {
    const TxnRequest& txn = *p->txn;
    // The flock cannot be lost while held: checking it here, inside the
    // write transaction, is as strong as it gets.
    if (txn.require_leader) {
      if (Status st = CheckLeader(); !st.ok()) {
        p->result = st;
        continue;
      }
    }
    if (Status st = Exec("SAVEPOINT txn"); !st.ok()) {
      p->result = st;
      continue;
    }
    p->result = ApplyLocked(txn);
    if (!p->result.ok() || !p->result->succeeded) {
      (void)Exec("ROLLBACK TO txn");
    } else if (!txn.ops.empty()) {
      any_change = true;
    }
    (void)Exec("RELEASE txn");
  }
  if (!any_change) {
    (void)Exec("ROLLBACK");
    return;
  }
  Status commit = Exec("COMMIT");
  if (!commit.ok()) {
    (void)Exec("ROLLBACK");
    // Nothing of the group is durable: every Txn that was to apply fails.
    for (PendingTxn* p : group) {
      if (p->result.ok() && p->result->succeeded && !p->txn->ops.empty()) p->result = commit;
    }
  }
}

// --- Watch: polls the events table ------------------------------------------

namespace {

class SqliteWatcher final : public Watcher {
 public:
  SqliteWatcher(SqliteStore* store, std::string prefix, int64_t after)
      : store_(store), prefix_(std::move(prefix)), after_(after) {}

  Result<std::vector<WatchEvent>> Next(std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      TANDEM_ASSIGN_OR_RETURN(std::vector<WatchEvent> events, store_->ReadEvents(prefix_, after_));
      if (!events.empty()) {
        after_ = events.back().kv.mod_revision;
        return events;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return events;
      // Polling: changes may come from another process, which no in-process
      // notification would see; 20 ms is far below any controller reaction.
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(20), deadline - now));
    }
  }

 private:
  SqliteStore* const store_;
  const std::string prefix_;
  int64_t after_;
};

}  // namespace

Result<std::vector<WatchEvent>> SqliteStore::ReadEvents(const std::string& prefix, int64_t after) {
  const std::string hi = PrefixEnd(prefix);
  MutexLock lock(&rmu_);
  TANDEM_RETURN_IF_ERROR(Exec("BEGIN", rdb_));
  std::vector<WatchEvent> events;
  Status st = [&]() -> Status {
    StmtReset reset_c(rstmts_->compacted_get);
    int rc = sqlite3_step(rstmts_->compacted_get);
    if (rc != SQLITE_ROW) return SqliteError("read compacted", rc, rdb_);
    const int64_t compacted = sqlite3_column_int64(rstmts_->compacted_get, 0);
    if (after < compacted) {
      return Status::OutOfRange("watch history after revision " + std::to_string(after) +
                                " is compacted (kept from " + std::to_string(compacted + 1) + ")");
    }
    sqlite3_stmt* s = hi.empty() ? rstmts_->events_open : rstmts_->events_bounded;
    StmtReset reset(s);
    sqlite3_bind_int64(s, 1, after);
    BindBlob(s, 2, prefix);
    if (!hi.empty()) BindBlob(s, 3, hi);
    for (;;) {
      rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return SqliteError("read events", rc, rdb_);
      WatchEvent e;
      e.kind = sqlite3_column_int(s, 2) == 0 ? WatchEvent::Kind::kPut : WatchEvent::Kind::kDelete;
      e.kv.mod_revision = sqlite3_column_int64(s, 0);
      e.kv.key = ColumnBlob(s, 1);
      e.kv.value = ColumnBlob(s, 3);
      e.kv.create_revision = sqlite3_column_int64(s, 4);
      e.kv.version = sqlite3_column_int64(s, 5);
      events.push_back(std::move(e));
    }
    return Status::Ok();
  }();
  (void)Exec("COMMIT", rdb_);
  if (!st.ok()) return st;
  return events;
}

Result<std::unique_ptr<Watcher>> SqliteStore::Watch(std::string_view prefix,
                                                    int64_t after_revision) {
  if (after_revision < 0) return Status::InvalidArgument("watch after a negative revision");
  int64_t after = after_revision;
  if (after == 0) {
    MutexLock lock(&rmu_);
    TANDEM_ASSIGN_OR_RETURN(after, ReadRevision(rstmts_.get(), rdb_));
  }
  // Fail now rather than at the first Next when the history is gone.
  TANDEM_RETURN_IF_ERROR(ReadEvents(std::string(prefix), after).status());
  return std::unique_ptr<Watcher>(new SqliteWatcher(this, std::string(prefix), after));
}

Status SqliteStore::Campaign(std::chrono::milliseconds timeout) {
  MutexLock lock(&election_mu_);
  if (IsLeader()) return Status::Ok();
  int fd = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return PosixError("open " + lock_path_, errno);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      if (SameFile(fd, lock_path_)) break;
      // We locked a file that was unlinked meanwhile; lock the current one.
      ::close(fd);
      fd = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) return PosixError("open " + lock_path_, errno);
      continue;
    }
    if (errno != EWOULDBLOCK && errno != EINTR) {
      Status st = PosixError("flock " + lock_path_, errno);
      ::close(fd);
      return st;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(fd);
      return Status::DeadlineExceeded("another controller leads (holds " + lock_path_ + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Best effort: the id is only informational (Leader()).
  if (::ftruncate(fd, 0) == 0) {
    (void)!::pwrite(fd, options_.candidate_id.data(), options_.candidate_id.size(), 0);
  }
  leader_fd_.store(fd);
  return Status::Ok();
}

Status SqliteStore::Resign() {
  MutexLock lock(&election_mu_);
  int fd = leader_fd_.exchange(-1);
  if (fd >= 0) ::close(fd);  // closing the only descriptor releases the flock
  return Status::Ok();
}

Result<std::optional<std::string>> SqliteStore::Leader() {
  int fd = ::open(lock_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return PosixError("open " + lock_path_, errno);
  }
  std::optional<std::string> leader;
  // A shared lock we can take means nobody holds the exclusive one.
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    char buf[256];
    ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
    leader = std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  }
  ::close(fd);
  return leader;
}

}  // namespace tandem::store

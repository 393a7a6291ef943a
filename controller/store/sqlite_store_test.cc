// SQLite-specific behaviour (the shared semantics are in the conformance suite).

#include "controller/store/sqlite_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "controller/store/metadata_store_wrapper.h"
#include "controller/store/store_test_util.h"

namespace tandem::store {
namespace {

using namespace std::chrono_literals;

TEST(SqliteStoreTest, DatabaseIsInWalModeInTheGivenDirectory) {
  TempDir dir;
  const std::string path = dir.path() + "/ctl";
  auto store = OpenStore("sqlite://" + path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->Put("/k", "v").ok());
  EXPECT_EQ((*store)->Backend(), "sqlite");
  // journal_mode is persistent in the file; read it with a plain connection.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((path + "/metadata.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

TEST(SqliteStoreTest, UnusableDirectoryIsAnErrorNotACrash) {
  TempDir dir;
  const std::string file = dir.path() + "/plain-file";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  auto store = OpenStore("sqlite://" + file);  // a file, not a directory
  EXPECT_FALSE(store.ok());
  auto nested = OpenStore("sqlite://" + file + "/sub");
  EXPECT_FALSE(nested.ok());
}

TEST(SqliteStoreTest, ReplacedLockFileEndsTheOldLeadersWrites) {
  TempDir dir;
  const std::string uri = "sqlite://" + dir.path() + "/ctl";
  StoreOptions a_opts, b_opts;
  a_opts.candidate_id = "a";
  b_opts.candidate_id = "b";
  auto a = OpenStore(uri, a_opts);
  auto b = OpenStore(uri, b_opts);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_OK((*a)->Campaign(5s));
  // An operator (or a cleanup script) deletes the lock file: b can now lock
  // a new one. a must not write from then on.
  ASSERT_EQ(::unlink((dir.path() + "/ctl/leader.lock").c_str()), 0);
  ASSERT_OK((*b)->Campaign(5s));
  auto stale = (*a)->Txn({.compares = {}, .ops = {Op::Put("/x", "a")}, .require_leader = true});
  EXPECT_EQ(stale.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*a)->IsLeader());
  auto fresh = (*b)->Txn({.compares = {}, .ops = {Op::Put("/x", "b")}, .require_leader = true});
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ((*(*b)->Get("/x"))->value, "b");
  EXPECT_EQ((*b)->Leader()->value_or("<none>"), "b");
}

TEST(SqliteStoreTest, WriterWaitsForAnotherInstancesTransactionInsteadOfFailing) {
  TempDir dir;
  const std::string path = dir.path() + "/ctl";
  auto store = OpenStore("sqlite://" + path);
  ASSERT_TRUE(store.ok());
  // Hold SQLite's write lock from a raw connection for a moment.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((path + "/metadata.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::thread release([db] {
    std::this_thread::sleep_for(300ms);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  });
  auto r = (*store)->Put("/k", "v");  // busy timeout (5 s) covers the 300 ms
  release.join();
  sqlite3_close(db);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->succeeded);
}

TEST(SqliteStoreTest, WriteLockHeldBeyondTheBusyTimeoutIsUnavailable) {
  TempDir dir;
  const std::string path = dir.path() + "/ctl";
  StoreOptions options;
  options.request_timeout = 200ms;
  auto store = OpenStore("sqlite://" + path, options);
  ASSERT_TRUE(store.ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((path + "/metadata.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  auto r = (*store)->Put("/k", "v");
  sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  // And nothing was written.
  EXPECT_FALSE((*(*store)->Get("/k")).has_value());
}

// Concurrent Txns of one instance share a SQLite transaction (group commit);
// each must still behave as if alone: its own compares, its own revision.
TEST(SqliteStoreTest, GroupCommittedTxnsKeepTheirOwnComparesAndRevisions) {
  TempDir dir;
  auto store = OpenStore("sqlite://" + dir.path() + "/ctl");
  ASSERT_TRUE(store.ok());
  MetadataStore* s = store->get();
  ASSERT_TRUE(s->Put("/counter", "0").ok());
  ASSERT_TRUE(s->Put("/exists", "x").ok());
  constexpr int kThreads = 8, kPerThread = 25;
  std::mutex mu;
  std::vector<int64_t> revisions;  // of every applied, changing Txn
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int done = 0, attempts = 0; done < kPerThread && attempts < 100000; ++attempts) {
        // A Txn whose compare fails, in the same groups as the others.
        auto doomed = s->Txn({.compares = {Compare::Absent("/exists")},
                              .ops = {Op::Put("/doomed/" + std::to_string(t), "x")}});
        if (!doomed.ok() || doomed->succeeded) ++wrong;
        auto cur = s->Get("/counter");
        if (!cur.ok() || !cur->has_value()) continue;
        const int v = std::stoi((*cur)->value);
        auto r =
            s->Txn({.compares = {Compare::ModRevisionEquals("/counter", (*cur)->mod_revision)},
                    .ops = {Op::Put("/counter", std::to_string(v + 1)),
                            Op::Put("/t/" + std::to_string(t) + "/" + std::to_string(done), "k")}});
        if (!r.ok()) ++wrong;
        if (r.ok() && r->succeeded) {
          ++done;
          std::lock_guard lock(mu);
          revisions.push_back(r->revision);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ((*s->Get("/counter"))->value, std::to_string(kThreads * kPerThread));
  EXPECT_FALSE(s->Range("/doomed/", "", 0)->kvs.size() > 0);
  EXPECT_EQ(s->Range("/t/", "", 0)->kvs.size(), static_cast<size_t>(kThreads * kPerThread));
  // One revision per applied Txn, none shared, and each names what it wrote.
  std::sort(revisions.begin(), revisions.end());
  EXPECT_EQ(std::adjacent_find(revisions.begin(), revisions.end()), revisions.end());
  auto written = s->Range("/t/", "", 0);
  ASSERT_TRUE(written.ok());
  for (const auto& kv : written->kvs) {
    EXPECT_TRUE(std::binary_search(revisions.begin(), revisions.end(), kv.mod_revision)) << kv.key;
  }
  // Reopened (a new process would see the same): all of it is on disk.
  store->reset();
  auto again = OpenStore("sqlite://" + dir.path() + "/ctl");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*(*again)->Get("/counter"))->value, std::to_string(kThreads * kPerThread));
}

// The wrapper forwards everything, and an override sees the real result.
TEST(MetadataStoreWrapperTest, ForwardsEveryCallAndLetsATestBreakOne) {
  class LosesTxnReplies : public MetadataStoreWrapper {
   public:
    using MetadataStoreWrapper::MetadataStoreWrapper;
    Result<TxnResult> Txn(const TxnRequest& t) override {
      auto applied = MetadataStoreWrapper::Txn(t);
      if (!applied.ok()) return applied;
      return Status::Unavailable("reply lost after commit");
    }
  };
  TempDir dir;
  auto real = OpenStore("sqlite://" + dir.path() + "/ctl");
  ASSERT_TRUE(real.ok());
  LosesTxnReplies store(real->get());
  EXPECT_EQ(store.Backend(), "sqlite");
  EXPECT_EQ(store.Put("/k", "v").status().code(), StatusCode::kUnavailable);
  // ...yet the write happened: the outcome of an UNAVAILABLE Txn is unknown.
  auto got = store.Get("/k");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->value, "v");
  auto range = store.Range("/", "", 0);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->kvs.size(), 1u);
  ASSERT_OK(store.Campaign(1s));
  EXPECT_TRUE(store.IsLeader());
  EXPECT_TRUE((*real)->IsLeader());
  EXPECT_TRUE(store.Leader()->has_value());
  ASSERT_OK(store.Resign());
  EXPECT_FALSE((*real)->IsLeader());
}

}  // namespace
}  // namespace tandem::store

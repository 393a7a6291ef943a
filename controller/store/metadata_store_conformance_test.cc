// One conformance suite, run against both MetadataStore backends: a fresh
// SQLite directory, and a real etcd started for the test (EtcdProcess).

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "controller/store/store_test_util.h"
#include "controller/store/testing/child_process.h"

namespace tandem::store {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::EtcdProcess;

constexpr auto kTtl = 2s;  // etcd's smallest lease TTL with default timings

class StoreConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "etcd") {
      std::string binary;
      if (!testing::EtcdAvailable(&binary)) GTEST_SKIP() << "no etcd binary at " << binary;
      auto etcd = EtcdProcess::Start();
      ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
      etcd_ = std::move(etcd).value();
      uri_ = etcd_->uri();
    } else {
      ASSERT_FALSE(dir_.path().empty());
      uri_ = "sqlite://" + dir_.path() + "/store";
    }
    store_ = Open("a");
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override {
    store_.reset();
    etcd_.reset();
  }

  std::unique_ptr<MetadataStore> Open(const std::string& candidate) {
    StoreOptions options;
    options.candidate_id = candidate;
    options.lease_ttl = kTtl;
    auto s = OpenStore(uri_, options);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  int64_t MustPut(const std::string& key, const std::string& value) {
    auto r = store_->Put(key, value);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r.ok() && r->succeeded);
    return r.ok() ? r->revision : -1;
  }

  std::optional<KeyValue> MustGet(MetadataStore* s, const std::string& key) {
    auto r = s->Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::nullopt;
  }

  std::vector<std::string> Keys(const RangeResult& r) {
    std::vector<std::string> keys;
    for (const auto& kv : r.kvs) keys.push_back(kv.key);
    return keys;
  }

  TempDir dir_;
  std::unique_ptr<EtcdProcess> etcd_;
  std::string uri_;
  std::unique_ptr<MetadataStore> store_;
};

TEST_P(StoreConformanceTest, GetOfMissingKeyIsNulloptNotAnError) {
  auto r = store_->Get("/tandem/volumes/none");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->has_value());
}

TEST_P(StoreConformanceTest, PutThenGetReturnsValueAndRevisions) {
  const int64_t rev = MustPut("/tandem/volumes/v1", "spec-1");
  auto kv = MustGet(store_.get(), "/tandem/volumes/v1");
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->key, "/tandem/volumes/v1");
  EXPECT_EQ(kv->value, "spec-1");
  EXPECT_EQ(kv->create_revision, rev);
  EXPECT_EQ(kv->mod_revision, rev);
  EXPECT_EQ(kv->version, 1);
}

TEST_P(StoreConformanceTest, OverwriteKeepsCreateRevisionAndCountsVersions) {
  const int64_t rev1 = MustPut("/k", "one");
  const int64_t rev2 = MustPut("/k", "two");
  EXPECT_EQ(rev2, rev1 + 1);
  auto kv = MustGet(store_.get(), "/k");
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->value, "two");
  EXPECT_EQ(kv->create_revision, rev1);
  EXPECT_EQ(kv->mod_revision, rev2);
  EXPECT_EQ(kv->version, 2);
}

TEST_P(StoreConformanceTest, DeleteRemovesKeyAndRecreateStartsOver) {
  const int64_t rev1 = MustPut("/k", "one");
  auto del = store_->Delete("/k");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_TRUE(del->succeeded);
  EXPECT_EQ(del->revision, rev1 + 1);
  EXPECT_FALSE(MustGet(store_.get(), "/k").has_value());
  const int64_t rev3 = MustPut("/k", "again");
  auto kv = MustGet(store_.get(), "/k");
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(kv->create_revision, rev3);
  EXPECT_EQ(kv->version, 1);
}

TEST_P(StoreConformanceTest, DeleteOfMissingKeyChangesNothing) {
  const int64_t rev = MustPut("/other", "x");
  auto del = store_->Delete("/missing");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_TRUE(del->succeeded);
  EXPECT_EQ(del->revision, rev);
}

TEST_P(StoreConformanceTest, RevisionsStrictlyIncreaseAndMatchModRevision) {
  int64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string key = "/rev/" + std::to_string(i % 3);
    const int64_t rev = MustPut(key, std::to_string(i));
    EXPECT_GT(rev, last);
    last = rev;
    auto kv = MustGet(store_.get(), key);
    ASSERT_TRUE(kv.has_value());
    EXPECT_EQ(kv->mod_revision, rev);
  }
  auto range = store_->Range("/rev/", "", 0);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->revision, last);
}

TEST_P(StoreConformanceTest, RangeReturnsExactlyThePrefixInBytewiseKeyOrder) {
  for (const char* k : {"/v/b", "/v/a", "/v0", "/u", "/v", "/w", "/v/a/x"}) MustPut(k, k);
  MustPut(std::string("/v/\xff", 4), "ff");
  auto r = store_->Range("/v/", "", 0);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Keys(*r),
            (std::vector<std::string>{"/v/a", "/v/a/x", "/v/b", std::string("/v/\xff", 4)}));
  EXPECT_FALSE(r->more);
  EXPECT_EQ(r->kvs[0].value, "/v/a");
  // A prefix matching nothing.
  auto none = store_->Range("/x/", "", 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->kvs.empty());
  EXPECT_FALSE(none->more);
  // The empty prefix is every key.
  auto all = store_->Range("", "", 0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->kvs.size(), 8u);
}

TEST_P(StoreConformanceTest, RangePagesThroughEveryKeyWithStartAfterAndLimit) {
  std::vector<std::string> want;
  for (int i = 0; i < 25; ++i) {
    char key[32];
    std::snprintf(key, sizeof(key), "/tandem/volumes/pvc-%03d", i);
    want.push_back(key);
    MustPut(key, "v");
  }
  MustPut("/tandem/volumet", "outside");  // sorts right after the prefix
  std::vector<std::string> got;
  std::string after;
  std::vector<size_t> pages;
  for (int guard = 0; guard < 10; ++guard) {
    auto r = store_->Range("/tandem/volumes/", after, 10);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    pages.push_back(r->kvs.size());
    for (const auto& kv : r->kvs) got.push_back(kv.key);
    if (!r->more) break;
    after = r->kvs.back().key;
  }
  EXPECT_EQ(pages, (std::vector<size_t>{10, 10, 5}));
  EXPECT_EQ(got, want);
  // A limit exactly at the end reports no more.
  auto exact = store_->Range("/tandem/volumes/", want[19], 5);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->kvs.size(), 5u);
  EXPECT_FALSE(exact->more);
}

TEST_P(StoreConformanceTest, TxnAppliesEveryOpAtOneRevisionWhenComparesHold) {
  const int64_t rev0 = MustPut("/a", "old");
  MustPut("/gone", "x");
  auto r = store_->Txn({.compares = {Compare::Exists("/a"), Compare::Absent("/b"),
                                     Compare::ModRevisionEquals("/a", rev0)},
                        .ops = {Op::Put("/a", "new"), Op::Put("/b", "b"), Op::Delete("/gone")}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->succeeded);
  auto a = MustGet(store_.get(), "/a");
  auto b = MustGet(store_.get(), "/b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->value, "new");
  EXPECT_EQ(b->value, "b");
  EXPECT_EQ(a->mod_revision, r->revision);
  EXPECT_EQ(b->mod_revision, r->revision);
  EXPECT_FALSE(MustGet(store_.get(), "/gone").has_value());
  EXPECT_EQ(r->revision, rev0 + 2);  // one revision for the whole txn
}

TEST_P(StoreConformanceTest, TxnWithAFailingCompareChangesNothing) {
  const int64_t rev = MustPut("/a", "v");
  const std::vector<Compare> failing = {Compare::Absent("/a"), Compare::Exists("/nope"),
                                        Compare::ModRevisionEquals("/a", rev + 5),
                                        Compare::ModRevisionEquals("/nope", 3)};
  for (const Compare& c : failing) {
    auto r = store_->Txn({.compares = {Compare::Exists("/a"), c},
                          .ops = {Op::Put("/a", "changed"), Op::Put("/new", "x")}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_FALSE(r->succeeded) << c.key;
    EXPECT_EQ(r->revision, rev);
    EXPECT_EQ(r->FailedAsAborted("create").code(), StatusCode::kAborted);
  }
  EXPECT_EQ(MustGet(store_.get(), "/a")->value, "v");
  EXPECT_FALSE(MustGet(store_.get(), "/new").has_value());
}

TEST_P(StoreConformanceTest, ModRevisionCompareIsACompareAndSwapToken) {
  // mod_revision 0 means "absent": create-if-absent in CAS form.
  auto create = store_->Txn(
      {.compares = {Compare::ModRevisionEquals("/cas", 0)}, .ops = {Op::Put("/cas", "1")}});
  ASSERT_TRUE(create.ok() && create->succeeded);
  const int64_t seen = MustGet(store_.get(), "/cas")->mod_revision;
  MustPut("/cas", "2");  // someone else updates
  auto stale = store_->Txn(
      {.compares = {Compare::ModRevisionEquals("/cas", seen)}, .ops = {Op::Put("/cas", "stale")}});
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->succeeded);
  const int64_t fresh_rev = MustGet(store_.get(), "/cas")->mod_revision;
  auto fresh = store_->Txn(
      {.compares = {Compare::ModRevisionEquals("/cas", fresh_rev)}, .ops = {Op::Put("/cas", "3")}});
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->succeeded);
  EXPECT_EQ(MustGet(store_.get(), "/cas")->value, "3");
}

TEST_P(StoreConformanceTest, LargeAndBinaryValuesRoundTripExactly) {
  std::mt19937_64 rng(13);
  std::string big(1 << 20, '\0');
  for (char& c : big) c = static_cast<char>(rng());
  MustPut("/big", big);
  const std::string binary("a\0b\0\xff", 5);
  MustPut("/bin", binary);
  MustPut("/empty", "");
  EXPECT_EQ(MustGet(store_.get(), "/big")->value, big);
  EXPECT_EQ(MustGet(store_.get(), "/bin")->value, binary);
  auto empty = MustGet(store_.get(), "/empty");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->value, "");
  auto r = store_->Range("/b", "", 0);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->kvs.size(), 2u);
  EXPECT_EQ(r->kvs[0].value, big);
}

TEST_P(StoreConformanceTest, InvalidRequestsAreInvalidArgumentAndChangeNothing) {
  EXPECT_EQ(store_->Get("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put("", "v").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put("/k", std::string(kMaxValueBytes + 1, 'x')).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put(std::string(kMaxKeyBytes + 1, 'k'), "v").status().code(),
            StatusCode::kInvalidArgument);
  auto dup = store_->Txn({.compares = {}, .ops = {Op::Put("/d", "1"), Op::Delete("/d")}});
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument);
  const std::string mib(1 << 20, 'm');  // each fits, together they exceed kMaxTxnBytes
  auto big = store_->Txn({.compares = {}, .ops = {Op::Put("/d", mib), Op::Put("/k", mib)}});
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(MustGet(store_.get(), "/d").has_value());
  EXPECT_FALSE(MustGet(store_.get(), "/k").has_value());
}

TEST_P(StoreConformanceTest, ConcurrentCasIncrementsFromTwoInstancesLoseNoUpdate) {
  auto other = Open("b");
  ASSERT_NE(other, nullptr);
  MustPut("/counter", "0");
  constexpr int kPerWriter = 40;
  std::atomic<int> conflicts{0};
  auto writer = [&](MetadataStore* s, std::atomic<int>* applied) {
    for (int done = 0, attempts = 0; done < kPerWriter && attempts < 20000; ++attempts) {
      auto cur = s->Get("/counter");
      if (!cur.ok() || !cur->has_value()) continue;
      const int value = std::stoi((*cur)->value);
      auto r = s->Txn({.compares = {Compare::ModRevisionEquals("/counter", (*cur)->mod_revision)},
                       .ops = {Op::Put("/counter", std::to_string(value + 1))}});
      if (r.ok() && r->succeeded) {
        ++done;
        ++*applied;
      } else {
        ++conflicts;
      }
    }
  };
  std::atomic<int> applied_a{0}, applied_b{0};
  std::thread ta(writer, store_.get(), &applied_a);
  std::thread tb(writer, other.get(), &applied_b);
  ta.join();
  tb.join();
  EXPECT_EQ(applied_a.load(), kPerWriter);
  EXPECT_EQ(applied_b.load(), kPerWriter);
  EXPECT_EQ(MustGet(store_.get(), "/counter")->value, std::to_string(2 * kPerWriter));
  EXPECT_EQ(MustGet(store_.get(), "/counter")->version, 2 * kPerWriter + 1);
  std::printf("CAS conflicts retried: %d\n", conflicts.load());
}

TEST_P(StoreConformanceTest, TxnIsNeverPartlyVisibleToAConcurrentReader) {
  auto reader = Open("b");
  ASSERT_NE(reader, nullptr);
  constexpr int kTxns = 60;
  std::atomic<bool> done{false};
  int reads = 0, torn = 0, went_back = 0;
  std::thread read_loop([&] {
    int64_t last_revision = 0;
    while (!done.load()) {
      auto r = reader->Range("/atomic/", "", 0);
      if (!r.ok()) continue;
      ++reads;
      if (r->revision < last_revision) ++went_back;
      last_revision = r->revision;
      // x, y and z are written by one Txn each time: all or nothing.
      if (r->kvs.empty()) continue;
      if (r->kvs.size() != 3 || r->kvs[0].value != r->kvs[1].value ||
          r->kvs[1].value != r->kvs[2].value || r->kvs[0].mod_revision != r->kvs[2].mod_revision) {
        ++torn;
      }
    }
  });
  for (int i = 0; i < kTxns; ++i) {
    const std::string v = std::to_string(i);
    auto w = store_->Txn(
        {.compares = {},
         .ops = {Op::Put("/atomic/x", v), Op::Put("/atomic/y", v), Op::Put("/atomic/z", v)}});
    ASSERT_TRUE(w.ok() && w->succeeded);
  }
  done.store(true);
  read_loop.join();
  EXPECT_GT(reads, 0);
  EXPECT_EQ(torn, 0);
  EXPECT_EQ(went_back, 0) << "a later read saw an older revision";
}

TEST_P(StoreConformanceTest, ReopenedStoreHasEveryKeyAndKeepsRevisionsGrowing) {
  MustPut("/a", "1");
  const int64_t rev = MustPut("/b", "2");
  store_.reset();
  store_ = Open("a2");
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(MustGet(store_.get(), "/a")->value, "1");
  EXPECT_EQ(MustGet(store_.get(), "/b")->mod_revision, rev);
  EXPECT_GT(MustPut("/c", "3"), rev);
}

// --- watch -------------------------------------------------------------------

// Collects at least `n` events (bounded wait).
std::vector<WatchEvent> Collect(Watcher* w, size_t n) {
  std::vector<WatchEvent> all;
  for (int i = 0; i < 50 && all.size() < n; ++i) {
    auto r = w->Next(200ms);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) break;
    all.insert(all.end(), r->begin(), r->end());
  }
  return all;
}

// "put /k=v@rev" / "delete /k@rev", sorted within a revision.
std::vector<std::string> Describe(const std::vector<WatchEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    out.push_back(e.kind == WatchEvent::Kind::kPut
                      ? "put " + e.kv.key + "=" + e.kv.value + "@" +
                            std::to_string(e.kv.mod_revision)
                      : "delete " + e.kv.key + "@" + std::to_string(e.kv.mod_revision));
  }
  return out;
}

TEST_P(StoreConformanceTest, WatchSeesPutsAndDeletesUnderThePrefixInRevisionOrder) {
  MustPut("/w/old", "before the watch");
  auto watcher = store_->Watch("/w/", 0);
  ASSERT_TRUE(watcher.ok()) << watcher.status().ToString();
  auto quiet = (*watcher)->Next(50ms);
  ASSERT_TRUE(quiet.ok());
  EXPECT_TRUE(quiet->empty());  // nothing happened since "now"

  // Writes from another instance, as another controller process would.
  auto other = Open("b");
  ASSERT_NE(other, nullptr);
  const int64_t r1 = other->Put("/w/a", "1")->revision;
  ASSERT_TRUE(other->Put("/x", "outside").ok());
  auto t = other->Txn(
      {.compares = {}, .ops = {Op::Put("/w/b", "2"), Op::Delete("/w/old"), Op::Delete("/w/none")}});
  ASSERT_TRUE(t.ok() && t->succeeded);
  const int64_t r2 = t->revision;

  std::vector<WatchEvent> events = Collect(watcher->get(), 3);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(Describe({events[0]}), std::vector<std::string>{"put /w/a=1@" + std::to_string(r1)});
  std::vector<std::string> second = Describe({events[1], events[2]});
  std::sort(second.begin(), second.end());
  EXPECT_EQ(second, (std::vector<std::string>{"delete /w/old@" + std::to_string(r2),
                                              "put /w/b=2@" + std::to_string(r2)}));
  for (const auto& e : events) {
    if (e.kind == WatchEvent::Kind::kPut) {
      EXPECT_EQ(e.kv.create_revision, e.kv.mod_revision);
      EXPECT_EQ(e.kv.version, 1);
    }
  }
}

TEST_P(StoreConformanceTest, WatchFromAPastRevisionReplaysWhatFollowed) {
  const int64_t r0 = MustPut("/w/k", "v1");
  MustPut("/w/k", "v2");
  ASSERT_TRUE(store_->Delete("/w/k").ok());
  auto watcher = store_->Watch("/w/", r0);
  ASSERT_TRUE(watcher.ok()) << watcher.status().ToString();
  std::vector<WatchEvent> events = Collect(watcher->get(), 2);
  EXPECT_EQ(Describe(events), (std::vector<std::string>{"put /w/k=v2@" + std::to_string(r0 + 1),
                                                        "delete /w/k@" + std::to_string(r0 + 2)}));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kv.version, 2);
  EXPECT_EQ(events[0].kv.create_revision, r0);
}

TEST_P(StoreConformanceTest, WatchOfCompactedHistoryIsOutOfRange) {
  StoreOptions options;
  options.candidate_id = "compactor";
  options.lease_ttl = kTtl;
  options.compact_interval = 1s;
  options.compact_keep_revisions = 5;
  auto s = OpenStore(uri_, options);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_OK((*s)->Campaign(10s));  // etcd: only the leader compacts
  const int64_t first = (*s)->Put("/w/c", "0")->revision;
  for (int i = 1; i < 20; ++i) ASSERT_TRUE((*s)->Put("/w/c", std::to_string(i)).ok());
  // SQLite prunes at every Txn; etcd within a compaction interval or two.
  StatusCode code = StatusCode::kOk;
  for (int i = 0; i < 50 && code != StatusCode::kOutOfRange; ++i) {
    auto w = (*s)->Watch("/w/", first);
    if (!w.ok()) {
      code = w.status().code();
    } else {
      auto next = (*w)->Next(100ms);
      code = next.ok() ? StatusCode::kOk : next.status().code();
    }
    if (code != StatusCode::kOutOfRange) std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(code, StatusCode::kOutOfRange);
  // Recent history is still there.
  auto recent = (*s)->Watch("/w/", (*(*s)->Get("/w/c"))->mod_revision - 2);
  ASSERT_TRUE(recent.ok()) << recent.status().ToString();
  EXPECT_EQ(Collect(recent->get(), 2).size(), 2u);
}

// --- leader election -------------------------------------------------------

TEST_P(StoreConformanceTest, OneOfTwoContendersLeads) {
  auto b = Open("b");
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(store_->IsLeader());
  auto nobody = store_->Leader();
  ASSERT_TRUE(nobody.ok());
  EXPECT_FALSE(nobody->has_value());

  ASSERT_OK(store_->Campaign(10s));
  EXPECT_TRUE(store_->IsLeader());
  Status lost = b->Campaign(300ms);
  EXPECT_EQ(lost.code(), StatusCode::kDeadlineExceeded) << lost.ToString();
  EXPECT_FALSE(b->IsLeader());
  EXPECT_TRUE(store_->IsLeader());
  ASSERT_OK(store_->Campaign(10ms));  // already leading: OK at once
  for (MetadataStore* s : {store_.get(), b.get()}) {
    auto leader = s->Leader();
    ASSERT_TRUE(leader.ok()) << leader.status().ToString();
    EXPECT_EQ(leader->value_or("<none>"), "a");
  }
}

TEST_P(StoreConformanceTest, ResignHandsLeadershipToTheOtherContender) {
  auto b = Open("b");
  ASSERT_NE(b, nullptr);
  ASSERT_OK(store_->Campaign(10s));
  ASSERT_OK(store_->Resign());
  EXPECT_FALSE(store_->IsLeader());
  ASSERT_OK(store_->Resign());  // idempotent
  // Bounded by the TTL only as a safety net: a resignation is immediate.
  ASSERT_OK(b->Campaign(kTtl + 3s));
  EXPECT_TRUE(b->IsLeader());
  EXPECT_EQ(b->Leader()->value_or("<none>"), "b");
}

TEST_P(StoreConformanceTest, ClosingTheLeaderHandsOverLeadership) {
  auto b = Open("b");
  ASSERT_NE(b, nullptr);
  ASSERT_OK(store_->Campaign(10s));
  store_.reset();
  ASSERT_OK(b->Campaign(kTtl + 3s));
  EXPECT_TRUE(b->IsLeader());
}

TEST_P(StoreConformanceTest, RequireLeaderTxnAppliesOnlyForTheLeader) {
  auto b = Open("b");
  ASSERT_NE(b, nullptr);
  auto before = store_->Txn({.compares = {}, .ops = {Op::Put("/x", "1")}, .require_leader = true});
  EXPECT_EQ(before.status().code(), StatusCode::kFailedPrecondition);
  ASSERT_OK(store_->Campaign(10s));
  auto follower = b->Txn({.compares = {}, .ops = {Op::Put("/x", "b")}, .require_leader = true});
  EXPECT_EQ(follower.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(MustGet(store_.get(), "/x").has_value());
  auto leader = store_->Txn(
      {.compares = {Compare::Absent("/x")}, .ops = {Op::Put("/x", "a")}, .require_leader = true});
  ASSERT_TRUE(leader.ok()) << leader.status().ToString();
  EXPECT_TRUE(leader->succeeded);
  // The user's compare still decides within a leader txn.
  auto again = store_->Txn(
      {.compares = {Compare::Absent("/x")}, .ops = {Op::Put("/x", "a2")}, .require_leader = true});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->succeeded);
  EXPECT_EQ(MustGet(store_.get(), "/x")->value, "a");
}

TEST_P(StoreConformanceTest, KilledLeaderIsReplacedWithinTheTtl) {
  auto child = ChildProcess::Spawn(
      {TANDEM_STORE_CHILD_PATH, "lead", uri_, "child", std::to_string(kTtl.count())});
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  auto line = (*child)->ReadLine(30s);
  ASSERT_EQ(line.value_or("<eof/timeout>"), "LEADER");
  EXPECT_EQ(store_->Campaign(300ms).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(store_->Leader()->value_or("<none>"), "child");
  (*child)->Kill();  // SIGKILL: no resign, no revoke
  // etcd: the lease expires within the TTL; sqlite: the kernel drops the flock.
  ASSERT_OK(store_->Campaign(kTtl + 3s));
  EXPECT_TRUE(store_->IsLeader());
  EXPECT_EQ(store_->Leader()->value_or("<none>"), "a");
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformanceTest, ::testing::Values("sqlite", "etcd"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

// --- backend-specific behaviour --------------------------------------------

TEST(OpenStoreTest, MalformedUrisAreInvalidArgument) {
  for (const char* uri :
       {"", "mysql://x", "etcd://", "etcd://127.0.0.1", "sqlite://relative/dir", "sqlite://"}) {
    auto s = OpenStore(uri);
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << uri;
  }
}

TEST(EtcdStoreTest, UnreachableEtcdIsUnavailable) {
  // A port nobody listens on: bind one, learn it, close it.
  auto etcd = EtcdProcess::Start();
  if (!etcd.ok() && etcd.status().code() == StatusCode::kNotFound) GTEST_SKIP();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  const std::string uri = (*etcd)->uri();
  (*etcd)->Kill();
  StoreOptions options;
  options.request_timeout = 1s;
  auto s = OpenStore(uri, options);
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status().ToString();
}

TEST(EtcdStoreTest, OperationsFailUnavailableWhileEtcdIsDownAndWorkAfterRestart) {
  auto etcd = EtcdProcess::Start();
  if (!etcd.ok() && etcd.status().code() == StatusCode::kNotFound) GTEST_SKIP();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  StoreOptions options;
  options.request_timeout = 1s;
  auto s = OpenStore((*etcd)->uri(), options);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE((*s)->Put("/k", "v").ok());
  (*etcd)->Kill();
  EXPECT_EQ((*s)->Get("/k").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ((*s)->Put("/k", "w").status().code(), StatusCode::kUnavailable);
  ASSERT_OK((*etcd)->Restart());
  // The store reconnects after UNAVAILABLE; bounded retries.
  Result<std::optional<KeyValue>> got = Status::Unavailable("not tried");
  for (int i = 0; i < 50 && !got.ok(); ++i) {
    got = (*s)->Get("/k");
    if (!got.ok()) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "v");
}

TEST(EtcdStoreTest, WatcherReportsUnavailableWhenEtcdDies) {
  auto etcd = EtcdProcess::Start();
  if (!etcd.ok() && etcd.status().code() == StatusCode::kNotFound) GTEST_SKIP();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  auto s = OpenStore((*etcd)->uri());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto w = (*s)->Watch("/w/", 0);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*s)->Put("/w/a", "1").ok());
  auto first = (*w)->Next(5s);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->size(), 1u);
  (*etcd)->Kill();
  Result<std::vector<WatchEvent>> next = std::vector<WatchEvent>();
  for (int i = 0; i < 50 && next.ok(); ++i) next = (*w)->Next(100ms);
  EXPECT_EQ(next.status().code(), StatusCode::kUnavailable) << next.status().ToString();
}

TEST(EtcdStoreTest, LeaderThatCannotRenewItsLeaseStopsLeadingBeforeItExpires) {
  auto etcd = EtcdProcess::Start();
  if (!etcd.ok() && etcd.status().code() == StatusCode::kNotFound) GTEST_SKIP();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  StoreOptions options;
  options.candidate_id = "a";
  options.lease_ttl = kTtl;
  options.request_timeout = 500ms;
  auto a = OpenStore((*etcd)->uri(), options);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_OK((*a)->Campaign(10s));
  ASSERT_TRUE((*a)->IsLeader());
  // etcd frozen: TCP still accepts, nothing answers.
  (*etcd)->Pause();
  // etcd can expire the lease kTtl after the last renewal it received, which
  // was before this point; the leader must have stopped believing by then.
  const auto frozen_at = std::chrono::steady_clock::now();
  auto last_seen_leading = frozen_at;
  while (std::chrono::steady_clock::now() - frozen_at < kTtl + 5s) {
    if (!(*a)->IsLeader()) break;
    last_seen_leading =
        std::chrono::steady_clock::now();  // taken after the answer: later, not earlier
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_FALSE((*a)->IsLeader());
  EXPECT_LE(last_seen_leading - frozen_at, kTtl);
  (*etcd)->Resume();
  auto write = (*a)->Txn({.compares = {}, .ops = {Op::Put("/x", "1")}, .require_leader = true});
  EXPECT_EQ(write.status().code(), StatusCode::kFailedPrecondition);
  // It can win again once etcd expired the old lease.
  ASSERT_OK((*a)->Campaign(kTtl + 5s));
  EXPECT_TRUE((*a)->IsLeader());
}

}  // namespace
}  // namespace tandem::store

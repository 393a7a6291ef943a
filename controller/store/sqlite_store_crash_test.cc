// kill -9 of a process in the middle of a storm of multi-key transactions on
// the SQLite store: every acknowledged Txn survives, and no Txn is partly
// visible (docs/metadata_store.md, "Durability").

#include <map>
#include <set>

#include "controller/store/store_test_util.h"
#include "controller/store/testing/child_process.h"

namespace tandem::store {
namespace {

using namespace std::chrono_literals;

struct StormSnapshot {
  std::map<int, std::set<std::string>> parts;  // i -> {"a","b","c","tmp"} present
  std::map<int, std::string> values;           // i -> value of a/b/c (must agree)
  bool values_agree = true;
  std::optional<int> last;
};

StormSnapshot ReadStorm(MetadataStore* store) {
  StormSnapshot snap;
  std::string after;
  for (int guard = 0; guard < 100000; ++guard) {
    auto r = store->Range("/storm/", after, 500);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) break;
    for (const auto& kv : r->kvs) {
      if (kv.key == "/storm/last") {
        snap.last = std::stoi(kv.value);
        continue;
      }
      // /storm/<i>/<part>
      const size_t slash = kv.key.find('/', 7);
      const int i = std::stoi(kv.key.substr(7, slash - 7));
      const std::string part = kv.key.substr(slash + 1);
      snap.parts[i].insert(part);
      if (part != "tmp") {
        auto [it, inserted] = snap.values.emplace(i, kv.value);
        if (!inserted && it->second != kv.value) snap.values_agree = false;
      }
    }
    if (!r->more) break;
    after = r->kvs.back().key;
  }
  return snap;
}

void StormAndKill(int kill_after_acks) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string uri = "sqlite://" + dir.path() + "/store";
  auto child = testing::ChildProcess::Spawn({TANDEM_STORE_CHILD_PATH, "storm", uri});
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  int max_acked = -1;
  while (max_acked + 1 < kill_after_acks) {
    auto line = (*child)->ReadLine(30s);
    ASSERT_TRUE(line.has_value()) << "storm stopped after " << max_acked + 1 << " acks";
    ASSERT_EQ(line->rfind("ACK ", 0), 0u) << *line;
    max_acked = std::stoi(line->substr(4));
  }
  (*child)->Kill();
  // Acks written before the kill are still in the pipe: they count too.
  while (auto line = (*child)->ReadLine(1s)) max_acked = std::stoi(line->substr(4));

  auto store = OpenStore(uri);  // recovers the WAL
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  StormSnapshot snap = ReadStorm(store->get());
  ASSERT_FALSE(snap.parts.empty());
  const int highest = snap.parts.rbegin()->first;
  // Every acknowledged txn is there; at most one more committed whose ack
  // the kill swallowed.
  EXPECT_GE(highest, max_acked);
  EXPECT_LE(highest, max_acked + 1);
  EXPECT_EQ(static_cast<int>(snap.parts.size()), highest + 1) << "a txn in the middle is missing";
  EXPECT_TRUE(snap.values_agree);
  for (const auto& [i, parts] : snap.parts) {
    // All of a/b/c or nothing; tmp only on the newest txn (deleted by the next).
    std::set<std::string> want = {"a", "b", "c"};
    if (i == highest) want.insert("tmp");
    EXPECT_EQ(parts, want) << "txn " << i << " is partly visible";
    EXPECT_EQ(snap.values[i], std::to_string(i) + std::string(512, 'x'));
  }
  ASSERT_TRUE(snap.last.has_value());
  EXPECT_EQ(*snap.last, highest);
  std::printf("killed after %d acks; %d txns recovered\n", max_acked + 1, highest + 1);
}

// Four threads, so Txns are group-committed (several per SQLite
// transaction): a kill mid-group must lose no acknowledged Txn and leave no
// Txn partly applied.
TEST(SqliteStoreCrashTest, KillNineMidGroupCommitLosesNoAcknowledgedTxnAndShowsNoPartialOne) {
  for (int kill_after : {5, 120}) {
    SCOPED_TRACE("kill after " + std::to_string(kill_after) + " acks");
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    const std::string uri = "sqlite://" + dir.path() + "/store";
    auto child = testing::ChildProcess::Spawn({TANDEM_STORE_CHILD_PATH, "storm", uri, "4"});
    ASSERT_TRUE(child.ok()) << child.status().ToString();
    std::set<int> acked;
    while (static_cast<int>(acked.size()) < kill_after) {
      auto line = (*child)->ReadLine(30s);
      ASSERT_TRUE(line.has_value()) << "storm stopped after " << acked.size() << " acks";
      acked.insert(std::stoi(line->substr(4)));
    }
    (*child)->Kill();
    while (auto line = (*child)->ReadLine(1s)) acked.insert(std::stoi(line->substr(4)));

    auto store = OpenStore(uri);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    StormSnapshot snap = ReadStorm(store->get());
    EXPECT_TRUE(snap.values_agree);
    for (int i : acked) EXPECT_TRUE(snap.parts.count(i)) << "acknowledged txn " << i << " lost";
    for (const auto& [i, parts] : snap.parts) {
      EXPECT_EQ(parts, (std::set<std::string>{"a", "b", "c"})) << "txn " << i << " partly visible";
      EXPECT_EQ(snap.values[i], std::to_string(i) + std::string(512, 'x'));
    }
    std::printf("killed after %zu acks; %zu txns recovered\n", acked.size(), snap.parts.size());
  }
}

TEST(SqliteStoreCrashTest, KillNineMidTxnStormLosesNoAcknowledgedTxnAndShowsNoPartialOne) {
  // Different kill points, each on a fresh directory.
  for (int acks : {1, 37, 150}) {
    SCOPED_TRACE("kill after " + std::to_string(acks) + " acks");
    StormAndKill(acks);
  }
}

}  // namespace
}  // namespace tandem::store

// store_bench: MetadataStore latency for both backends, in one run.
//
// For each store (SQLite in a temp dir on this machine's file system; a
// real etcd started by the bench, also on this file system), runs:
//   create   the CreateVolume shape: Txn{absent(vol), absent(name)} ->
//            put(vol record), put(name index)                 (2 keys, fsync)
//   cas      the publish shape: Get + Txn{mod_revision == N} -> put(record)
//   get      one linearizable read
//   range    a 100-key page of ListVolumes
// each --ops times at concurrency 1 (the controller's writes are serialized
// per volume), with a 1 KiB value, and prints p50 / p99 / mean in
// microseconds and ops/s; then `create xN`: the same creates from --writers
// threads at once on one store instance (concurrent CSI calls), reporting
// per-op latency and the aggregate ops/s. --uri measures one store instead.
//
//   store_bench [--ops=500] [--writers=8] [--uri=sqlite:///dir | etcd://host:port]

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/flags.h"
#include "controller/store/metadata_store.h"
#include "controller/store/testing/etcd_process.h"

namespace {

using tandem::MonotonicNanos;
using tandem::store::Compare;
using tandem::store::MetadataStore;
using tandem::store::Op;

struct Stats {
  std::vector<uint64_t> ns;
  // Aggregate ops/s over `wall_ns` (concurrent runs); 0: 1e6 / mean.
  void Print(const char* store, const char* op, uint64_t wall_ns = 0) {
    std::sort(ns.begin(), ns.end());
    double sum = 0;
    for (uint64_t v : ns) sum += static_cast<double>(v);
    auto pct = [&](double p) {
      size_t i = std::min(ns.size() - 1, static_cast<size_t>(p * static_cast<double>(ns.size())));
      return static_cast<double>(ns[i]) / 1000.0;
    };
    const double mean_us = sum / static_cast<double>(ns.size()) / 1000.0;
    const double ops_s = wall_ns
                             ? static_cast<double>(ns.size()) * 1e9 / static_cast<double>(wall_ns)
                             : 1e6 / mean_us;
    std::printf("%-7s %-9s n=%-5zu p50=%8.0f us  p99=%8.0f us  mean=%8.0f us  %7.0f ops/s\n", store,
                op, ns.size(), pct(0.50), pct(0.99), mean_us, ops_s);
  }
};

bool Check(bool ok, const char* what) {
  if (!ok) std::fprintf(stderr, "store_bench: %s failed\n", what);
  return ok;
}

// `writers` threads each create ops/writers volumes (distinct keys).
int RunConcurrentCreates(const std::string& label, MetadataStore* store, int ops, int writers) {
  const std::string value(1024, 'r');
  Stats stats;
  std::mutex mu;
  bool failed = false;
  const uint64_t start = MonotonicNanos();
  std::vector<std::thread> threads;
  for (int t = 0; t < writers; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint64_t> mine;
      for (int i = t; i < ops; i += writers) {
        const std::string vol = "/bench/cvolumes/vol-" + std::to_string(100000 + i);
        const std::string name = "/bench/cnames/pvc-" + std::to_string(100000 + i);
        uint64_t t0 = MonotonicNanos();
        auto r = store->Txn({.compares = {Compare::Absent(vol), Compare::Absent(name)},
                             .ops = {Op::Put(vol, value), Op::Put(name, vol)}});
        mine.push_back(MonotonicNanos() - t0);
        if (!r.ok() || !r->succeeded) {
          std::lock_guard lock(mu);
          failed = true;
          return;
        }
      }
      std::lock_guard lock(mu);
      stats.ns.insert(stats.ns.end(), mine.begin(), mine.end());
    });
  }
  for (auto& th : threads) th.join();
  const uint64_t wall = MonotonicNanos() - start;
  if (!Check(!failed, "concurrent create txn")) return 1;
  const std::string op = "create x" + std::to_string(writers);
  stats.Print(label.c_str(), op.c_str(), wall);
  return 0;
}

int Run(const std::string& label, MetadataStore* store, int ops) {
  const std::string value(1024, 'r');
  Stats create, cas, get, range;
  for (int i = 0; i < ops; ++i) {
    const std::string vol = "/bench/volumes/vol-" + std::to_string(100000 + i);
    const std::string name = "/bench/names/pvc-" + std::to_string(100000 + i);
    uint64_t t0 = MonotonicNanos();
    auto r = store->Txn({.compares = {Compare::Absent(vol), Compare::Absent(name)},
                         .ops = {Op::Put(vol, value), Op::Put(name, vol)}});
    create.ns.push_back(MonotonicNanos() - t0);
    if (!Check(r.ok() && r->succeeded, "create txn")) return 1;
  }
  for (int i = 0; i < ops; ++i) {
    const std::string vol = "/bench/volumes/vol-" + std::to_string(100000 + i);
    uint64_t t0 = MonotonicNanos();
    auto cur = store->Get(vol);
    if (!Check(cur.ok() && cur->has_value(), "get before cas")) return 1;
    auto r = store->Txn({.compares = {Compare::ModRevisionEquals(vol, (*cur)->mod_revision)},
                         .ops = {Op::Put(vol, value + "p")}});
    cas.ns.push_back(MonotonicNanos() - t0);
    if (!Check(r.ok() && r->succeeded, "cas txn")) return 1;
  }
  for (int i = 0; i < ops; ++i) {
    uint64_t t0 = MonotonicNanos();
    auto r = store->Get("/bench/volumes/vol-" + std::to_string(100000 + i));
    get.ns.push_back(MonotonicNanos() - t0);
    if (!Check(r.ok(), "get")) return 1;
  }
  for (int i = 0; i < std::max(1, ops / 10); ++i) {
    uint64_t t0 = MonotonicNanos();
    auto r = store->Range("/bench/volumes/", "", 100);
    range.ns.push_back(MonotonicNanos() - t0);
    if (!Check(r.ok() && r->kvs.size() == std::min<size_t>(100, ops), "range")) return 1;
  }
  create.Print(label.c_str(), "create");
  cas.Print(label.c_str(), "cas");
  get.Print(label.c_str(), "get");
  range.Print(label.c_str(), "range100");
  return 0;
}

int RunUri(const std::string& label, const std::string& uri, int ops, int writers) {
  auto store = tandem::store::OpenStore(uri);
  if (!store.ok()) {
    std::fprintf(stderr, "store_bench: open %s: %s\n", uri.c_str(),
                 store.status().ToString().c_str());
    return 1;
  }
  if (int rc = Run(label, store->get(), ops); rc != 0) return rc;
  return writers > 1 ? RunConcurrentCreates(label, store->get(), ops, writers) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  tandem::Flags flags;
  flags.Define("ops", "500", "operations per measurement");
  flags.Define("uri", "", "measure only this store (sqlite:///dir or etcd://host:port)");
  flags.Define("writers", "8", "threads of the concurrent create run (1: skip it)");
  if (tandem::Status s = flags.Parse(argc, argv); !s.ok() || flags.help_requested()) {
    std::fprintf(stderr, "%s%s\n", s.ok() ? "" : (s.ToString() + "\n").c_str(),
                 flags.Usage("store_bench").c_str());
    return s.ok() ? 0 : 2;
  }
  uint64_t ops = 0;
  if (tandem::Status s = flags.GetUint("ops", &ops); !s.ok() || ops == 0) {
    std::fprintf(stderr, "store_bench: --ops must be a positive integer\n");
    return 2;
  }
  uint64_t writers = 0;
  if (tandem::Status s = flags.GetUint("writers", &writers);
      !s.ok() || writers == 0 || writers > 256) {
    std::fprintf(stderr, "store_bench: --writers must be 1..256\n");
    return 2;
  }
  const int w = static_cast<int>(writers);
  if (!flags.Get("uri").empty())
    return RunUri("custom", flags.Get("uri"), static_cast<int>(ops), w);

  // SQLite in a temp dir on the same file system etcd's data dir uses.
  std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-bench-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return 1;
  int rc = RunUri("sqlite", "sqlite://" + tmpl, static_cast<int>(ops), w);
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  if (rc != 0) return rc;

  auto etcd = tandem::store::testing::EtcdProcess::Start();
  if (!etcd.ok()) {
    std::fprintf(stderr, "store_bench: etcd: %s\n", etcd.status().ToString().c_str());
    return 1;
  }
  return RunUri("etcd", (*etcd)->uri(), static_cast<int>(ops), w);
}

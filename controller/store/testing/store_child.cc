// store_child: a process for the store tests to SIGKILL.
//
//   store_child storm <uri> [threads]        Txn storm; prints "ACK <i>" after Txn i returned OK
//   store_child lead <uri> <candidate> <ttl> campaigns, prints "LEADER", then idles
//
// Storm Txn i (one transaction): if /storm/<i>/a is absent, put
// /storm/<i>/{a,b,c} = StormValue(i), put /storm/<i>/tmp, delete
// /storm/<i-1>/tmp, put /storm/last = i. A reader after a crash must find,
// for every i, all of a/b/c or none, and every acknowledged i present.
// With threads > 1 (group commit), thread t runs i = t, t+threads, ... and
// writes only /storm/<i>/{a,b,c}: gaps are then legal, partial Txns are not.
// Each run is bounded (60 s / 100000 txns) so a forgotten child still ends.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "controller/store/metadata_store.h"

namespace {

using tandem::store::Compare;
using tandem::store::Op;
using tandem::store::TxnRequest;

void Say(const std::string& line) {
  std::string s = line + "\n";
  // write(2), not stdio: nothing may sit in a buffer when SIGKILL lands.
  (void)!::write(STDOUT_FILENO, s.data(), s.size());
}

int StormThreads(tandem::store::MetadataStore* store, int threads) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([=] {
      for (int i = t; i < 100000 && std::chrono::steady_clock::now() < end; i += threads) {
        const std::string base = "/storm/" + std::to_string(i);
        const std::string value = std::to_string(i) + std::string(512, 'x');
        auto r = store->Txn({.compares = {Compare::Absent(base + "/a")},
                             .ops = {Op::Put(base + "/a", value), Op::Put(base + "/b", value),
                                     Op::Put(base + "/c", value)}});
        if (!r.ok() || !r->succeeded) std::_Exit(1);
        Say("ACK " + std::to_string(i));
      }
    });
  }
  for (auto& w : workers) w.join();
  return 0;
}

int Storm(const std::string& uri, int threads) {
  auto store = tandem::store::OpenStore(uri);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  if (threads > 1) return StormThreads(store->get(), threads);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < 100000 && std::chrono::steady_clock::now() < end; ++i) {
    const std::string base = "/storm/" + std::to_string(i);
    const std::string value = std::to_string(i) + std::string(512, 'x');
    TxnRequest txn;
    txn.compares = {Compare::Absent(base + "/a")};
    txn.ops = {Op::Put(base + "/a", value), Op::Put(base + "/b", value),
               Op::Put(base + "/c", value), Op::Put(base + "/tmp", "t"),
               Op::Put("/storm/last", std::to_string(i))};
    if (i > 0) txn.ops.push_back(Op::Delete("/storm/" + std::to_string(i - 1) + "/tmp"));
    auto r = (*store)->Txn(txn);
    if (!r.ok() || !r->succeeded) {
      std::fprintf(stderr, "txn %d: %s\n", i,
                   r.ok() ? "compare failed" : r.status().ToString().c_str());
      return 1;
    }
    Say("ACK " + std::to_string(i));
  }
  return 0;
}

int Lead(const std::string& uri, const std::string& candidate, int ttl) {
  tandem::store::StoreOptions options;
  options.candidate_id = candidate;
  options.lease_ttl = std::chrono::seconds(ttl);
  auto store = tandem::store::OpenStore(uri, options);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
    return 1;
  }
  tandem::Status st = (*store)->Campaign(std::chrono::seconds(60));
  if (!st.ok()) {
    std::fprintf(stderr, "campaign: %s\n", st.ToString().c_str());
    return 1;
  }
  Say("LEADER");
  std::this_thread::sleep_for(std::chrono::seconds(120));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if ((argc == 3 || argc == 4) && std::string(argv[1]) == "storm") {
    return Storm(argv[2], argc == 4 ? std::atoi(argv[3]) : 1);
  }
  if (argc == 5 && std::string(argv[1]) == "lead")
    return Lead(argv[2], argv[3], std::atoi(argv[4]));
  std::fprintf(stderr,
               "usage: store_child storm <uri> [threads] | lead <uri> <candidate> <ttl-seconds>\n");
  return 2;
}

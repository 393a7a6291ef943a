// controller_bench: latency of tandem-controller's CSI calls, end to end over
// its unix socket, against three real tandem-engine processes on 127.0.0.1,
// on the embedded SQLite store and on a real etcd (issue 13's benchmark).
//
//   controller_bench [--rounds=50] [--store=both|sqlite|etcd] [--size=64M] [--replicas=3]
//
// Each round: CreateVolume (a new name; replicas created on the engines),
// ControllerPublishVolume (epoch + attachment), ControllerUnpublishVolume
// (epoch raised and fenced on the replicas), DeleteVolume. Prints p50 / p99
// / max in milliseconds per call and store. Run by hand; never a timed test.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/flags.h"
#include "controller/store/testing/etcd_process.h"
#include "tests/harness/local_cluster.h"

namespace {

namespace csi = ::csi::v1;
using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Samples {
  std::map<std::string, std::vector<double>> ms;
  std::map<std::string, std::string> first_error;
  std::map<std::string, int> errors;
};

template <typename Call>
bool Time(Samples* s, const char* op, Call call) {
  auto t0 = Clock::now();
  grpc::Status st = call();
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!st.ok()) {
    if (s->errors[op]++ == 0) s->first_error[op] = st.error_message();
    return false;
  }
  s->ms[op].push_back(ms);
  return true;
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return ctx;
}

int RunStore(const std::string& store, uint64_t rounds, uint64_t size,
             const std::string& replicas) {
  tandem::controller::testing::LocalCluster cluster;
  std::unique_ptr<tandem::store::testing::EtcdProcess> etcd;
  if (store == "etcd") {
    auto started = tandem::store::testing::EtcdProcess::Start();
    if (!started.ok()) {
      std::fprintf(stderr, "etcd: %s\n", started.status().ToString().c_str());
      return 1;
    }
    etcd = std::move(*started);
    cluster.UseEtcd(etcd->endpoint());
  }
  tandem::Status st = cluster.StartEngines(3);
  if (st.ok()) st = cluster.StartController();
  if (st.ok()) st = cluster.RegisterEngines();
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s (run dir %s)\n", store.c_str(), st.ToString().c_str(),
                 cluster.root().c_str());
    return 1;
  }
  auto ctl = cluster.Controller();
  Samples s;
  for (uint64_t i = 0; i < rounds; ++i) {
    csi::CreateVolumeRequest creq;
    creq.set_name("bench-" + std::to_string(i));
    creq.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(size));
    auto* cap = creq.add_volume_capabilities();
    cap->mutable_mount()->set_fs_type("ext4");
    cap->mutable_access_mode()->set_mode(csi::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
    (*creq.mutable_parameters())["replicas"] = replicas;
    csi::CreateVolumeResponse cresp;
    if (!Time(&s, "CreateVolume", [&] { return ctl->CreateVolume(Ctx().get(), creq, &cresp); })) {
      continue;
    }
    std::string id = cresp.volume().volume_id();
    csi::ControllerPublishVolumeRequest preq;
    preq.set_volume_id(id);
    preq.set_node_id("e" + std::to_string(i % 3));
    *preq.mutable_volume_capability() = *cap;
    csi::ControllerPublishVolumeResponse presp;
    Time(&s, "ControllerPublishVolume",
         [&] { return ctl->ControllerPublishVolume(Ctx().get(), preq, &presp); });
    csi::ControllerUnpublishVolumeRequest ureq;
    ureq.set_volume_id(id);
    ureq.set_node_id(preq.node_id());
    csi::ControllerUnpublishVolumeResponse uresp;
    Time(&s, "ControllerUnpublishVolume",
         [&] { return ctl->ControllerUnpublishVolume(Ctx().get(), ureq, &uresp); });
    csi::DeleteVolumeRequest dreq;
    dreq.set_volume_id(id);
    csi::DeleteVolumeResponse dresp;
    Time(&s, "DeleteVolume", [&] { return ctl->DeleteVolume(Ctx().get(), dreq, &dresp); });
  }
  for (const char* op :
       {"CreateVolume", "ControllerPublishVolume", "ControllerUnpublishVolume", "DeleteVolume"}) {
    const auto& v = s.ms[op];
    std::printf("%-7s %-26s n=%-4zu p50=%8.2f ms  p99=%8.2f ms  max=%8.2f ms", store.c_str(), op,
                v.size(), Percentile(v, 0.5), Percentile(v, 0.99), Percentile(v, 1.0));
    if (s.errors[op] != 0) {
      std::printf("  errors=%d (first: %s)", s.errors[op], s.first_error[op].c_str());
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tandem::Flags flags;
  flags.Define("rounds", "50", "create/publish/unpublish/delete rounds per store");
  flags.Define("store", "both", "sqlite, etcd or both");
  flags.Define("size", "64M", "volume size");
  flags.Define("replicas", "3", "replicas per volume (1..3: the bench runs 3 engines)");
  tandem::Status st = flags.Parse(argc, argv);
  if (flags.help_requested()) {
    std::fputs(flags.Usage("controller_bench").c_str(), stdout);
    return 0;
  }
  uint64_t rounds = 0, size = 0;
  if (st.ok()) st = flags.GetUint("rounds", &rounds);
  if (st.ok()) st = flags.GetUint("size", &size, /*sizes=*/true);
  std::string store = flags.Get("store");
  if (st.ok() && store != "both" && store != "sqlite" && store != "etcd") {
    st = tandem::Status::InvalidArgument("--store must be sqlite, etcd or both");
  }
  if (!st.ok()) {
    std::fprintf(stderr, "controller_bench: %s\n", st.ToString().c_str());
    return 2;
  }
  int rc = 0;
  if (store != "etcd") rc |= RunStore("sqlite", rounds, size, flags.Get("replicas"));
  if (store != "sqlite") rc |= RunStore("etcd", rounds, size, flags.Get("replicas"));
  return rc;
}

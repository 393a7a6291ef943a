// metadata_stall_bench: how much one volume's metadata updates stall another
// volume on the same replica server (issue 10).
//
// One in-process ReplicaServer serves two replicas:
//   A  a small volume with a QD1 4 KiB random writer (the victim), and
//   B  a large sparse volume whose dirty map is being updated.
// Phases, each `--seconds` long, run in one process so the ratios compare
// measurements taken seconds apart on the same (shared, noisy) machine:
//   baseline    B idle;
//   mark-storm  B receives MARK_DIRTY of fresh 64 KiB regions at QD32 (what
//               a target sends every healthy replica when a peer faults);
//   clear       B receives MARK_DIRTY then CLEAR_DIRTY of 2 GiB chunks at QD1
//               (the untrack rounds a target runs once every replica is back:
//               each one rewrites the whole metadata slot).
// Prints, per phase, A's write count and p50/p99/max latency, the p99 and max
// ratios against the baseline, and the metadata operations B completed.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/event_loop.h"
#include "common/flags.h"
#include "common/logging.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"

namespace {

using tandem::MonotonicNanos;
using tandem::StatusCode;
using tandem::client::ClientRequest;
using tandem::client::ReplicaClient;
using tandem::protocol::Opcode;

constexpr uint64_t kSizeA = 64ull << 20;
constexpr uint32_t kRegion = 64 * 1024;
constexpr uint64_t kClearChunk = 2ull << 30;  // the target's untrack round
constexpr uint32_t kStormDepth = 32;

struct Listener : ReplicaClient::Listener {
  bool connected = false;
  bool failed = false;
  tandem::Status why;
  void OnConnected(const tandem::protocol::ReplicaInfo&) override { connected = true; }
  void OnDisconnected(const tandem::Status& w) override {
    failed = true;
    why = w;
  }
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "metadata_stall_bench: %s\n", what.c_str());
  std::exit(1);
}

double Percentile(std::vector<uint64_t> v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;
}

enum class Phase { kBaseline, kMarkStorm, kClear };
const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kBaseline:
      return "baseline (B idle)";
    case Phase::kMarkStorm:
      return "B MARK_DIRTY storm";
    case Phase::kClear:
      return "B MARK+CLEAR 2GiB";
  }
  return "?";
}

// The bench's client side: both connections on one loop (this thread).
class Driver {
 public:
  Driver(tandem::EventLoop* loop, ReplicaClient* a, ReplicaClient* b, uint64_t size_b)
      : loop_(loop), a_(a), b_(b), size_b_(size_b), rng_(42) {
    buf_ = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
    std::memset(buf_, 0xab, 4096);
    for (auto& m : meta_) m.ctx = this;
  }
  ~Driver() { std::free(buf_); }

  // A writes every activity-log extent once, so the measured writes never
  // wait for a first-touch persist of their own.
  void Warm() {
    for (uint64_t off = 0; off < kSizeA; off += 1u << 20) {
      write_.op = Opcode::kWrite;
      write_.offset = off;
      write_.length = 4096;
      write_.buf = buf_;
      write_.ctx = this;
      write_.done = [](ClientRequest* r) { static_cast<Driver*>(r->ctx)->write_busy_ = false; };
      write_busy_ = true;
      a_->Submit(&write_);
      while (write_busy_) loop_->RunOnce(100);
      if (write_.status != StatusCode::kOk) Die("warm-up write failed");
    }
  }

  struct Report {
    std::vector<uint64_t> lat_ns;
    uint64_t b_ops = 0;
    uint64_t b_errors = 0;
  };

  Report Run(Phase phase, double seconds) {
    phase_ = phase;
    report_ = Report{};
    stop_ = false;
    const uint64_t end = MonotonicNanos() + static_cast<uint64_t>(seconds * 1e9);
    StartWrite();
    if (phase == Phase::kMarkStorm) {
      for (uint32_t i = 0; i < kStormDepth; ++i) StartMeta(&meta_[i]);
    } else if (phase == Phase::kClear) {
      StartMeta(&meta_[0]);
    }
    while (MonotonicNanos() < end) loop_->RunOnce(10);
    stop_ = true;
    // Drain (bounded: every request has the client's timeout).
    const uint64_t drain_end = MonotonicNanos() + 30'000'000'000ull;
    while ((write_busy_ || meta_busy_ > 0) && MonotonicNanos() < drain_end) loop_->RunOnce(10);
    if (write_busy_ || meta_busy_ > 0) Die("requests did not drain");
    return std::move(report_);
  }

 private:
  void StartWrite() {
    write_ = ClientRequest{};
    write_.op = Opcode::kWrite;
    write_.offset = (rng_() % (kSizeA / 4096)) * 4096;
    write_.length = 4096;
    write_.buf = buf_;
    write_.ctx = this;
    write_.done = &Driver::OnWriteDone;
    write_busy_ = true;
    write_start_ = MonotonicNanos();
    a_->Submit(&write_);
  }
  static void OnWriteDone(ClientRequest* r) {
    auto* d = static_cast<Driver*>(r->ctx);
    d->write_busy_ = false;
    if (r->status != StatusCode::kOk) Die("A write failed");
    d->report_.lat_ns.push_back(MonotonicNanos() - d->write_start_);
    if (!d->stop_) d->StartWrite();
  }

  void StartMeta(ClientRequest* m) {
    void* ctx = m->ctx;
    *m = ClientRequest{};
    m->ctx = ctx;
    m->done = &Driver::OnMetaDone;
    if (phase_ == Phase::kMarkStorm) {
      // A fresh region each time: every one needs a metadata persist.
      const uint64_t regions = size_b_ / kRegion;
      m->op = Opcode::kMarkDirty;
      m->offset = (next_region_++ % regions) * kRegion;
      m->length = kRegion;
    } else {
      const uint64_t chunks = size_b_ / kClearChunk;
      const uint64_t chunk = (next_chunk_ / 2) % chunks;
      m->op = next_chunk_ % 2 == 0 ? Opcode::kMarkDirty : Opcode::kClearDirty;
      m->offset = chunk * kClearChunk;
      m->length = static_cast<uint32_t>(kClearChunk);
      ++next_chunk_;
    }
    ++meta_busy_;
    b_->Submit(m);
  }
  static void OnMetaDone(ClientRequest* r) {
    auto* d = static_cast<Driver*>(r->ctx);
    --d->meta_busy_;
    ++d->report_.b_ops;
    if (r->status != StatusCode::kOk) ++d->report_.b_errors;
    if (!d->stop_) d->StartMeta(r);
  }

  tandem::EventLoop* loop_;
  ReplicaClient* a_;
  ReplicaClient* b_;
  uint64_t size_b_;
  std::mt19937_64 rng_;
  uint8_t* buf_ = nullptr;
  Phase phase_ = Phase::kBaseline;
  bool stop_ = false;
  ClientRequest write_;
  bool write_busy_ = false;
  uint64_t write_start_ = 0;
  ClientRequest meta_[kStormDepth];
  uint32_t meta_busy_ = 0;
  uint64_t next_region_ = 0;
  uint64_t next_chunk_ = 0;
  Report report_;
};

}  // namespace

// size: a benchmark's linear script (flags, setup, timed loop, report), read top to bottom.
int main(int argc, char** argv) {
  tandem::Flags flags;
  flags.Define("seconds", "3", "length of each phase");
  flags.Define("backend", "auto", "storage backend: auto, io_uring or libaio");
  flags.Define("dir", "/var/tmp", "directory for the replicas (a real file system: O_DIRECT)");
  flags.Define("size-b", "256G", "size of the sparse volume B (its dirty map: 1 bit per 64 KiB)");
  if (tandem::Status st = flags.Parse(argc, argv); !st.ok()) Die(st.ToString());
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage("metadata_stall_bench").c_str());
    return 0;
  }
  uint64_t seconds = 0, size_b = 0;
  if (tandem::Status st = flags.GetUint("seconds", &seconds); !st.ok()) Die(st.ToString());
  if (tandem::Status st = flags.GetUint("size-b", &size_b, true); !st.ok()) Die(st.ToString());
  tandem::SetLogLevel(tandem::LogLevel::kWarning);  // the table is the output
  if (size_b < kClearChunk || size_b % kClearChunk != 0) Die("--size-b must be a multiple of 2G");

  std::string tmpl = flags.Get("dir") + "/tandem-stall-bench-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp in " + flags.Get("dir"));
  const std::string dir = tmpl;
  auto backend = tandem::backend::BackendFactory::Create(flags.Get("backend"));
  if (!backend.ok()) Die(backend.status().ToString());
  int rc = 0;
  {
    tandem::replica::ReplicaManager manager(backend->get(), dir);
    if (tandem::Status st = manager.LoadAll(); !st.ok()) Die(st.ToString());
    tandem::replica::ReplicaConfig ca;
    ca.volume_id = "a";
    ca.replica_id = "ra";
    ca.size = kSizeA;
    tandem::replica::ReplicaConfig cb = ca;
    cb.volume_id = "b";
    cb.replica_id = "rb";
    cb.size = size_b;
    if (!manager.Create(ca).ok() || !manager.Create(cb).ok()) Die("creating the replicas");
    tandem::server::ServerOptions so;
    tandem::server::ReplicaServer server(&manager, backend->get(), so);
    if (tandem::Status st = server.Start(); !st.ok()) Die(st.ToString());

    tandem::EventLoop loop;
    auto options = [&](const char* vol) {
      tandem::client::ClientOptions o;
      o.port = server.port();
      o.volume_id = vol;
      o.epoch = 1;
      o.target_id = 7;
      o.request_timeout_ms = 30000;
      return o;
    };
    Listener la, lb;
    ReplicaClient a(&loop, options("a"), &la);
    ReplicaClient b(&loop, options("b"), &lb);
    if (!a.Connect().ok() || !b.Connect().ok()) Die("connect");
    const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
    while (!(la.connected && lb.connected) && !la.failed && !lb.failed &&
           MonotonicNanos() < deadline) {
      loop.RunOnce(10);
    }
    if (!la.connected || !lb.connected) Die("HELLO failed");

    Driver d(&loop, &a, &b, size_b);
    d.Warm();
    std::printf(
        "metadata_stall_bench: backend %s, A %llu MiB QD1 4K writes, B %llu GiB "
        "(slot %zu KiB), %llu s per phase\n",
        backend->get()->Name(), static_cast<unsigned long long>(kSizeA >> 20),
        static_cast<unsigned long long>(size_b >> 30),
        tandem::replica::MetadataSlotSize(size_b, kRegion, 4u << 20) / 1024,
        static_cast<unsigned long long>(seconds));
    std::printf("%-22s %8s %9s %9s %10s %8s %8s %8s\n", "phase", "A writes", "p50 us", "p99 us",
                "max us", "p99 x", "max x", "B ops");
    double base_p99 = 0, base_max = 0;
    for (Phase p : {Phase::kBaseline, Phase::kMarkStorm, Phase::kClear}) {
      Driver::Report r = d.Run(p, static_cast<double>(seconds));
      const double p50 = Percentile(r.lat_ns, 0.50);
      const double p99 = Percentile(r.lat_ns, 0.99);
      const double mx =
          r.lat_ns.empty()
              ? 0
              : static_cast<double>(*std::max_element(r.lat_ns.begin(), r.lat_ns.end())) / 1000.0;
      if (p == Phase::kBaseline) {
        base_p99 = p99;
        base_max = mx;
      }
      std::printf("%-22s %8zu %9.1f %9.1f %10.1f %8.2f %8.2f %8llu%s\n", PhaseName(p),
                  r.lat_ns.size(), p50, p99, mx, base_p99 > 0 ? p99 / base_p99 : 0,
                  base_max > 0 ? mx / base_max : 0, static_cast<unsigned long long>(r.b_ops),
                  r.b_errors ? " (errors!)" : "");
      if (r.b_errors) rc = 1;
    }
    a.Close();
    b.Close();
    server.Stop();
    (void)manager.CloseAll();
  }
  std::filesystem::remove_all(dir);
  return rc;
}

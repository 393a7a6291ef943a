// replica_bench: the replica data path against the raw backend, in one run.
//
//   (a) the raw StorageBackend on a file (io_uring and libaio), and
//   (b) one replica served by a tandem-engine process over loopback TCP,
// each running 1 MiB sequential write (which also fills the file, so reads hit
// real blocks rather than holes), 4 KiB random write and random read at QD1
// and QD32. Prints IOPS, MB/s, p50/p99 latency, CPU time per I/O and the ratio
// (b)/(a io_uring), plus a 4 KiB TCP ping-pong on 127.0.0.1 so the QD1 latency
// budget is stated in the same run's units, and the engine's RSS before/after.
// The targets run interleaved (each workload on (a) then (b)), so the ratios
// compare measurements taken seconds apart on a shared, noisy machine.
//
// CPU per I/O counts every thread of the processes involved (for (b): this
// process and the engine), so it includes the kernel time of io_uring workers.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/event_loop.h"
#include "common/flags.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"

namespace {

using tandem::MonotonicNanos;

struct Workload {
  const char* name;
  bool write;
  bool random;
  uint32_t block;
  uint32_t qd;
};

const Workload kWorkloads[] = {
    {"seqwrite 1M qd4", true, false, 1u << 20, 4}, {"randwrite 4K qd1", true, true, 4096, 1},
    {"randwrite 4K qd32", true, true, 4096, 32},   {"randread 4K qd1", false, true, 4096, 1},
    {"randread 4K qd32", false, true, 4096, 32},
};

struct Result {
  std::string target;
  std::string workload;
  double iops = 0;
  double mbps = 0;
  double p50_us = 0;
  double p99_us = 0;
  double cpu_us_per_io = 0;
};

// CPU seconds (user + system, all threads) of a process.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  size_t rp = line.rfind(')');
  if (rp == std::string::npos) return 0;
  std::vector<std::string> fields;
  std::string cur;
  for (size_t i = rp + 2; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ' ') {
      fields.push_back(cur);
      cur.clear();
    } else {
      cur += line[i];
    }
  }
  // fields[0] is state (field 3); utime is field 14, stime field 15.
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

long RssKiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

double Percentile(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * (v.size() - 1));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k] / 1000.0;
}

// One I/O in flight, reused.
struct BenchIo {
  tandem::backend::IoRequest raw;
  tandem::client::ClientRequest net;
  uint8_t* buf = nullptr;
  uint64_t start_ns = 0;
  bool done = false;
};

// The two things being measured behind one small interface.
class Target {
 public:
  virtual ~Target() = default;
  virtual void Start(BenchIo* io, bool write, uint64_t off, uint32_t len) = 0;
  // Blocks until at least one I/O completes.
  virtual void WaitSome() = 0;
  virtual double CpuSeconds() = 0;
};

class RawTarget final : public Target {
 public:
  RawTarget(tandem::backend::StorageBackend* b, int fd) : b_(b), fd_(fd) {}
  void Start(BenchIo* io, bool write, uint64_t off, uint32_t len) override {
    tandem::backend::IoRequest& r = io->raw;
    r.op = write ? tandem::backend::IoOp::kWrite : tandem::backend::IoOp::kRead;
    r.fd = fd_;
    r.offset = off;
    r.length = len;
    r.buf = io->buf;
    r.flags = 0;
    r.ctx = io;
    r.done = [](tandem::backend::IoRequest* q) {
      auto* i = static_cast<BenchIo*>(q->ctx);
      if (q->result != static_cast<int32_t>(q->length)) {
        std::fprintf(stderr, "raw I/O failed: %d\n", q->result);
        std::exit(1);
      }
      i->done = true;
    };
    b_->Queue(&r);
  }
  void WaitSome() override { b_->Reap(1, -1); }
  double CpuSeconds() override { return SelfCpuSeconds(); }

 private:
  tandem::backend::StorageBackend* b_;
  int fd_;
};

class ReplicaTarget final : public Target {
 public:
  ReplicaTarget(tandem::EventLoop* loop, tandem::client::ReplicaClient* c, pid_t engine)
      : loop_(loop), c_(c), engine_(engine) {}
  void Start(BenchIo* io, bool write, uint64_t off, uint32_t len) override {
    tandem::client::ClientRequest& r = io->net;
    r.op = write ? tandem::protocol::Opcode::kWrite : tandem::protocol::Opcode::kRead;
    r.offset = off;
    r.length = len;
    r.buf = io->buf;
    r.flags = 0;
    r.ctx = io;
    r.done = [](tandem::client::ClientRequest* q) {
      if (q->status != tandem::StatusCode::kOk) {
        std::fprintf(stderr, "replica I/O failed: %s\n", tandem::StatusCodeName(q->status));
        std::exit(1);
      }
      static_cast<BenchIo*>(q->ctx)->done = true;
    };
    c_->Submit(&r);
  }
  void WaitSome() override { loop_->RunOnce(-1); }
  double CpuSeconds() override { return SelfCpuSeconds() + ProcessCpuSeconds(engine_); }

 private:
  tandem::EventLoop* loop_;
  tandem::client::ReplicaClient* c_;
  pid_t engine_;
};

Result Run(const std::string& target_name, Target* t, const Workload& w, uint64_t size,
           double seconds, std::vector<uint32_t>& lat) {
  std::vector<BenchIo> ios(w.qd);
  for (BenchIo& io : ios) {
    io.buf = static_cast<uint8_t*>(std::aligned_alloc(4096, w.block));
    for (uint32_t i = 0; i < w.block; ++i) io.buf[i] = static_cast<uint8_t>(i * 7 + 1);
  }
  std::mt19937_64 rng(42);
  uint64_t blocks = size / w.block;
  uint64_t next_seq = 0;
  // The sequential fill covers the whole file exactly once; random runs last
  // `seconds`.
  uint64_t total_seq = w.random ? ~0ull : blocks;
  auto next_off = [&]() -> uint64_t {
    return w.random ? (rng() % blocks) * w.block : (next_seq++ % blocks) * w.block;
  };
  lat.clear();
  double cpu0 = t->CpuSeconds();
  uint64_t t0 = MonotonicNanos();
  uint64_t deadline = t0 + static_cast<uint64_t>(seconds * 1e9);
  uint64_t started = 0, completed = 0;
  for (BenchIo& io : ios) {
    if (started == total_seq) break;
    io.done = false;
    io.start_ns = MonotonicNanos();
    t->Start(&io, w.write, next_off(), w.block);
    ++started;
  }
  uint64_t inflight = started;
  while (inflight > 0) {
    t->WaitSome();
    uint64_t now = MonotonicNanos();
    for (BenchIo& io : ios) {
      if (!io.done) continue;
      io.done = false;
      --inflight;
      ++completed;
      lat.push_back(static_cast<uint32_t>(std::min<uint64_t>(now - io.start_ns, UINT32_MAX)));
      bool more = w.random ? now < deadline : started < total_seq;
      if (more) {
        io.start_ns = now;
        t->Start(&io, w.write, next_off(), w.block);
        ++started;
        ++inflight;
      }
    }
  }
  double elapsed = (MonotonicNanos() - t0) / 1e9;
  double cpu = t->CpuSeconds() - cpu0;
  for (BenchIo& io : ios) std::free(io.buf);
  Result r;
  r.target = target_name;
  r.workload = w.name;
  r.iops = completed / elapsed;
  r.mbps = completed * static_cast<double>(w.block) / elapsed / 1e6;
  r.p50_us = Percentile(lat, 0.50);
  r.p99_us = Percentile(lat, 0.99);
  r.cpu_us_per_io = cpu * 1e6 / static_cast<double>(completed);
  return r;
}

// 4 KiB each way over 127.0.0.1, blocking sockets, one echo thread.
// `cpu_a` / `cpu_b` pin the two ends (-1: wherever the scheduler puts them):
// on a small VM waking a peer on the other vCPU costs several times more than
// on the same one, so the bench reports both.
double PingPongP50Us(int iterations, int cpu_a, int cpu_b) {
  cpu_set_t saved;
  pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved);
  auto pin = [](int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  };
  pin(cpu_a);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  listen(lfd, 1);
  socklen_t len = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto full = [](int fd, char* b, size_t n, bool send_side) {
    size_t done = 0;
    while (done < n) {
      ssize_t k =
          send_side ? send(fd, b + done, n - done, MSG_NOSIGNAL) : recv(fd, b + done, n - done, 0);
      if (k <= 0) return false;
      done += static_cast<size_t>(k);
    }
    return true;
  };
  std::thread echo([&] {
    pin(cpu_b);
    int fd = accept(lfd, nullptr, nullptr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> b(4096);
    while (full(fd, b.data(), b.size(), false) && full(fd, b.data(), b.size(), true)) {
    }
    close(fd);
  });
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::vector<char> b(4096, 'p');
  std::vector<uint32_t> lat;
  for (int i = 0; i < iterations; ++i) {
    uint64_t t0 = MonotonicNanos();
    full(fd, b.data(), b.size(), true);
    full(fd, b.data(), b.size(), false);
    lat.push_back(static_cast<uint32_t>(MonotonicNanos() - t0));
  }
  close(fd);
  echo.join();
  close(lfd);
  pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
  return Percentile(lat, 0.5);
}

struct Engine {
  pid_t pid = -1;
  uint16_t port = 0;
};

Engine StartEngine(const std::string& engine, const std::string& dir, uint64_t size,
                   const std::string& backend, uint32_t busy_poll_us, int cpu) {
  std::string port_file = dir + "/engine.port";
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {engine,
                                   "--data-dir=" + dir + "/engine",
                                   "--listen=127.0.0.1:0",
                                   "--backend=" + backend,
                                   "--port-file=" + port_file,
                                   "--busy-poll-us=" + std::to_string(busy_poll_us),
                                   "--cpu=" + std::to_string(cpu),
                                   "--create-replica=bench:" + std::to_string(size)};
  Engine e;
  e.pid = fork();
  if (e.pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execv(engine.c_str(), argv.data());
    _exit(127);
  }
  for (int i = 0; i < 500; ++i) {
    std::ifstream f(port_file);
    unsigned p = 0;
    if (f >> p) {
      e.port = static_cast<uint16_t>(p);
      return e;
    }
    int status;
    if (waitpid(e.pid, &status, WNOHANG) == e.pid) break;
    usleep(10000);
  }
  std::fprintf(stderr, "tandem-engine (%s) did not start\n", engine.c_str());
  std::exit(1);
}

struct ConnectListener : tandem::client::ReplicaClient::Listener {
  bool up = false, down = false;
  void OnConnected(const tandem::protocol::ReplicaInfo&) override { up = true; }
  void OnDisconnected(const tandem::Status& s) override {
    down = true;
    std::fprintf(stderr, "replica connection: %s\n", s.ToString().c_str());
  }
};

void Pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

}  // namespace

// size: a benchmark's linear script (flags, setup, timed loop, report), read top to bottom.
int main(int argc, char** argv) {
  tandem::Flags flags;
  flags.Define("dir", "/var/tmp/tandem-bench", "scratch directory on the filesystem under test");
  flags.Define("size", "1G", "file / replica size");
  flags.Define("seconds", "3", "duration of each random workload");
  flags.Define("engine", "", "tandem-engine binary (default: the one built with this bench)");
  flags.Define("server-backend", "io_uring", "backend of the replica server");
  flags.Define("busy-poll-us", "0", "busy-poll before sleeping, in the engine and the client");
  flags.Define("client-cpu", "-1", "pin the benchmark thread to this CPU");
  flags.Define("server-cpu", "-1", "pin the engine's I/O thread to this CPU");
  tandem::Status st = flags.Parse(argc, argv);
  if (!st.ok() || flags.help_requested()) {
    std::fprintf(stderr, "%s\n%s", st.ToString().c_str(), flags.Usage("replica_bench").c_str());
    return st.ok() ? 0 : 2;
  }
  uint64_t size = 0, busy = 0;
  if (!(st = flags.GetUint("size", &size, true)).ok() ||
      !(st = flags.GetUint("busy-poll-us", &busy)).ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  double seconds = std::atof(flags.Get("seconds").c_str());
  std::string dir = flags.Get("dir");
  std::string engine = flags.Get("engine");
  if (engine.empty()) engine = TANDEM_ENGINE_PATH;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  signal(SIGPIPE, SIG_IGN);
  Pin(std::atoi(flags.Get("client-cpu").c_str()));

  std::vector<Result> results;
  std::vector<uint32_t> lat;
  lat.reserve(20'000'000);
  auto print = [](const Result& r) {
    std::printf("%-22s %-18s %10.0f %9.1f %9.1f %9.1f %10.1f\n", r.target.c_str(),
                r.workload.c_str(), r.iops, r.mbps, r.p50_us, r.p99_us, r.cpu_us_per_io);
    std::fflush(stdout);
  };
  std::printf("%-22s %-18s %10s %9s %9s %9s %10s\n", "target", "workload", "IOPS", "MB/s",
              "p50(us)", "p99(us)", "cpu(us/io)");

  // (a) raw backends, each on its own file.
  struct Raw {
    std::string name;
    std::unique_ptr<tandem::backend::StorageBackend> backend;
    std::string path;
    int fd = -1;
    std::unique_ptr<RawTarget> target;
  };
  std::vector<Raw> raws;
  for (const char* name : {"io_uring", "libaio"}) {
    auto b = tandem::backend::BackendFactory::Create(name);
    if (!b.ok()) {
      std::printf("%-22s unavailable: %s\n", name, b.status().ToString().c_str());
      continue;
    }
    Raw r;
    r.name = std::string("raw ") + name;
    r.backend = std::move(*b);
    r.path = dir + "/raw-" + name;
    auto fd = r.backend->OpenFile(r.path.c_str(), true);
    if (!fd.ok() || ftruncate(*fd, static_cast<off_t>(size)) != 0) {
      std::fprintf(stderr, "cannot create %s\n", r.path.c_str());
      return 1;
    }
    r.fd = *fd;
    r.target = std::make_unique<RawTarget>(r.backend.get(), r.fd);
    raws.push_back(std::move(r));
  }

  // (b) one replica over loopback TCP.
  Engine e = StartEngine(engine, dir, size, flags.Get("server-backend"),
                         static_cast<uint32_t>(busy), std::atoi(flags.Get("server-cpu").c_str()));
  tandem::EventLoop loop;
  loop.SetBusyPollMicros(static_cast<uint32_t>(busy));
  tandem::client::ClientOptions co;
  co.port = e.port;
  co.volume_id = "bench";
  co.epoch = 1;
  ConnectListener cl;
  tandem::client::ReplicaClient client(&loop, co, &cl);
  if (!(st = client.Connect()).ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  while (!cl.up && !cl.down) loop.RunOnce(100);
  if (!cl.up) return 1;
  long rss_before = RssKiB(e.pid);
  ReplicaTarget rt(&loop, &client, e.pid);
  std::string rname = "replica tcp (" + flags.Get("server-backend") + ")";

  // Interleaved: each workload runs on (a) and (b) back to back, so a change
  // in the shared machine's load skews both sides of a ratio alike instead of
  // landing on one of them (sequential phases drifted by 2x here).
  for (const Workload& w : kWorkloads) {
    for (Raw& r : raws) {
      results.push_back(Run(r.name, r.target.get(), w, size, seconds, lat));
      print(results.back());
    }
    results.push_back(Run(rname, &rt, w, size, seconds, lat));
    print(results.back());
  }
  long rss_after = RssKiB(e.pid);
  client.Close();
  kill(e.pid, SIGTERM);
  int status = 0;
  waitpid(e.pid, &status, 0);
  for (Raw& r : raws) {
    r.backend->CloseFile(r.fd);
    std::filesystem::remove(r.path);
  }

  double rtt = PingPongP50Us(20000, -1, -1);
  double rtt_same = PingPongP50Us(20000, 0, 0);
  double rtt_cross = PingPongP50Us(20000, 0, 1);

  // Ratios (b)/(a io_uring).
  std::printf("\nratio replica/raw io_uring:\n");
  auto find = [&](const std::string& target, const char* wl) -> const Result* {
    for (const Result& r : results) {
      if (r.target == target && r.workload == wl) return &r;
    }
    return nullptr;
  };
  for (const Workload& w : kWorkloads) {
    const Result* a = find("raw io_uring", w.name);
    const Result* b = find(rname, w.name);
    if (a == nullptr || b == nullptr) continue;
    std::printf("  %-18s IOPS x%.2f   p50 %+.1f us\n", w.name, b->iops / a->iops,
                b->p50_us - a->p50_us);
  }
  std::printf(
      "\n4 KiB TCP ping-pong p50 on 127.0.0.1: %.1f us (unpinned; pinned same CPU %.1f us, "
      "CPUs 0/1 %.1f us)\n",
      rtt, rtt_same, rtt_cross);
  for (const char* wl : {"randwrite 4K qd1", "randread 4K qd1"}) {
    const Result* a = find("raw io_uring", wl);
    const Result* b = find(rname, wl);
    if (a == nullptr || b == nullptr) continue;
    double budget = a->p50_us + rtt + 20;
    std::printf("QD1 %s: replica p50 %.1f us vs budget raw %.1f + rtt %.1f + 20 = %.1f us: %s\n",
                wl, b->p50_us, a->p50_us, rtt, budget, b->p50_us <= budget ? "met" : "MISSED");
  }
  for (const char* wl : {"randwrite 4K qd32", "randread 4K qd32"}) {
    const Result* a = find("raw io_uring", wl);
    const Result* b = find(rname, wl);
    if (a == nullptr || b == nullptr) continue;
    double ratio = b->iops / a->iops;
    std::printf("QD32 %s: replica/raw %.2f (target >= 0.80): %s\n", wl, ratio,
                ratio >= 0.8 ? "met" : "MISSED");
  }
  std::printf("engine RSS: %ld KiB after connect, %ld KiB after the run (%+ld KiB)\n", rss_before,
              rss_after, rss_after - rss_before);
  std::filesystem::remove_all(dir);
  return 0;
}

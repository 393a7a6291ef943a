// memory_export: serves one in-memory BlockDevice (the tests' MemoryBlockDevice,
// completing every request on its loop) through the FUSE file export and the
// NBD server at once, until SIGINT/SIGTERM. bench/fuse_bench.sh uses it to
// measure what each frontend costs by itself, with no replication and no
// disk behind it.
//
//   memory_export --fuse-dir=DIR [--nbd-socket=PATH] [--size=1G]
//                 [--block-size=4096] [--max-io=1M] [--threads=32]
//
// Prints "ready file=<path> nbd=<socket>" once both are serving.

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "common/event_loop.h"
#include "replica-engine/frontend/fuse_export.h"
#include "replica-engine/frontend/nbd_server.h"
#include "tests/support/memory_block_device.h"

namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

bool ParseSize(const std::string& s, uint64_t* out) {
  char* end = nullptr;
  unsigned long long v = strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return false;
  std::string suffix(end);
  if (suffix == "K")
    v <<= 10;
  else if (suffix == "M")
    v <<= 20;
  else if (suffix == "G")
    v <<= 30;
  else if (!suffix.empty())
    return false;
  *out = v;
  return true;
}

}  // namespace

// size: a benchmark's linear script (flags, setup, timed loop, report), read top to bottom.
int main(int argc, char** argv) {
  using namespace tandem;
  std::string fuse_dir, nbd_socket;
  uint64_t size = 1ull << 30, block_size = 4096, max_io = 1u << 20, threads = 32;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* name) -> const char* {
      size_t n = strlen(name);
      return a.compare(0, n, name) == 0 ? a.c_str() + n : nullptr;
    };
    const char* v;
    bool ok = true;
    if ((v = val("--fuse-dir=")) != nullptr)
      fuse_dir = v;
    else if ((v = val("--nbd-socket=")) != nullptr)
      nbd_socket = v;
    else if ((v = val("--size=")) != nullptr)
      ok = ParseSize(v, &size);
    else if ((v = val("--block-size=")) != nullptr)
      ok = ParseSize(v, &block_size);
    else if ((v = val("--max-io=")) != nullptr)
      ok = ParseSize(v, &max_io);
    else if ((v = val("--threads=")) != nullptr)
      ok = ParseSize(v, &threads);
    else
      ok = false;
    if (!ok) {
      fprintf(stderr, "memory_export: bad argument %s\n", a.c_str());
      return 2;
    }
  }
  if (fuse_dir.empty()) {
    fprintf(stderr, "usage: memory_export --fuse-dir=DIR [--nbd-socket=PATH] [--size=1G]\n");
    return 2;
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  EventLoop loop;
  frontend::testing::MemoryBlockDeviceOptions mo;
  mo.size = size;
  mo.block_size = static_cast<uint32_t>(block_size);
  mo.max_io_size = static_cast<uint32_t>(max_io);
  frontend::testing::MemoryBlockDevice device(&loop, mo);
  if (!device.init_status().ok()) {
    fprintf(stderr, "memory_export: %s\n", device.init_status().ToString().c_str());
    return 1;
  }
  frontend::FuseExportOptions fo;
  fo.mount_dir = fuse_dir;
  fo.name = "memory";
  fo.threads = static_cast<uint32_t>(threads);
  frontend::FuseExport fuse(&loop, &device, fo);
  Status st = fuse.Start();
  if (!st.ok()) {
    fprintf(stderr, "memory_export: %s\n", st.ToString().c_str());
    return 1;
  }
  std::unique_ptr<frontend::NbdServer> nbd;
  if (!nbd_socket.empty()) {
    frontend::NbdServerOptions no;
    no.export_name = "memory";
    no.unix_path = nbd_socket;
    nbd = std::make_unique<frontend::NbdServer>(&loop, &device, no);
    st = nbd->Start();
    if (!st.ok()) {
      fprintf(stderr, "memory_export: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  printf("ready file=%s nbd=%s\n", fuse.file_path().c_str(), nbd_socket.c_str());
  fflush(stdout);
  while (!g_stop) loop.RunOnce(100);

  int pending = nbd ? 2 : 1;
  auto done = [](void* arg) { --*static_cast<int*>(arg); };
  fuse.Shutdown(done, &pending);
  if (nbd) nbd->Shutdown(done, &pending);
  for (int i = 0; i < 300 && pending > 0; ++i) loop.RunOnce(100);
  const auto& s = device.stats();
  fprintf(stderr,
          "memory_export: device requests %llu: reads %llu writes %llu (fua %llu) flushes %llu "
          "trims %llu write-zeroes %llu, max in flight %llu\n",
          static_cast<unsigned long long>(s.submitted), static_cast<unsigned long long>(s.reads),
          static_cast<unsigned long long>(s.writes), static_cast<unsigned long long>(s.fua_writes),
          static_cast<unsigned long long>(s.flushes), static_cast<unsigned long long>(s.trims),
          static_cast<unsigned long long>(s.write_zeroes),
          static_cast<unsigned long long>(s.max_inflight));
  return pending == 0 ? 0 : 1;
}

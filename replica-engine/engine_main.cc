// tandem-engine: the per-node data-plane daemon. This first version hosts the
// replicas stored under --data-dir and serves them over the data protocol; the
// gRPC management API and volume targets come with the volume-target issue.
//
//   tandem-engine --data-dir=/var/lib/tandem --listen=127.0.0.1:9500
//                 --create-replica=vol-1:1G
//
// SIGTERM/SIGINT: stop accepting, finish in-flight I/O, flush and mark every
// replica cleanly shut down, exit 0.

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/flags.h"
#include "common/logging.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"

namespace {

constexpr const char* kTag = "engine";

tandem::Status ParseListen(const std::string& listen, std::string* host, uint16_t* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return tandem::Status::InvalidArgument("--listen must be HOST:PORT, got '" + listen + "'");
  }
  *host = listen.substr(0, colon);
  uint64_t p = 0;
  tandem::Status st = tandem::ParseSize(listen.substr(colon + 1), &p);
  if (!st.ok() || p > 65535) {
    return tandem::Status::InvalidArgument("--listen has a bad port: '" + listen + "'");
  }
  *port = static_cast<uint16_t>(p);
  return tandem::Status::Ok();
}

// "VOLUME_ID:SIZE[:REPLICA_ID]"
tandem::Status ParseReplicaSpec(const std::string& spec, tandem::replica::ReplicaConfig* cfg) {
  size_t c1 = spec.find(':');
  if (c1 == std::string::npos) {
    return tandem::Status::InvalidArgument("--create-replica must be VOLUME_ID:SIZE[:REPLICA_ID]");
  }
  cfg->volume_id = spec.substr(0, c1);
  std::string rest = spec.substr(c1 + 1);
  size_t c2 = rest.find(':');
  std::string size = rest.substr(0, c2);
  cfg->replica_id = c2 == std::string::npos ? cfg->volume_id + "-r" : rest.substr(c2 + 1);
  return tandem::ParseSize(size, &cfg->size).WithContext("--create-replica size");
}

int Fail(const tandem::Status& st) {
  TLOG_ERROR(kTag, "%s", st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  tandem::Flags flags;
  flags.Define("data-dir", "/var/lib/tandem", "directory holding this node's replicas");
  flags.Define("listen", "127.0.0.1:9500", "data protocol address HOST:PORT (port 0: any)");
  flags.Define("backend", "auto", "storage backend: auto, io_uring or libaio");
  flags.Define("auth-token", "", "token every target must present (empty: none)");
  flags.Define("create-replica", "", "VOLUME_ID:SIZE[:REPLICA_ID] to create at start (repeatable)");
  flags.Define("busy-poll-us", "0", "poll this long before sleeping (latency vs CPU)");
  flags.Define("cpu", "-1", "pin the I/O thread to this CPU");
  flags.Define("buffer-pool", "128M", "bytes of aligned I/O buffers");
  flags.Define("port-file", "", "write the bound port here once listening");
  tandem::Status st = flags.Parse(argc, argv);
  if (!st.ok() || flags.help_requested()) {
    std::fprintf(stderr, "%s%s\n", st.ok() ? "" : (st.ToString() + "\n").c_str(),
                 flags.Usage("tandem-engine").c_str());
    return st.ok() ? 0 : 2;
  }

  // Signals are taken synchronously by sigwait on the main thread, so the
  // shutdown runs as normal code, not inside a handler.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  tandem::server::ServerOptions opts;
  st = ParseListen(flags.Get("listen"), &opts.listen_address, &opts.port);
  if (!st.ok()) return Fail(st);
  opts.auth_token = flags.Get("auth-token");
  uint64_t v = 0;
  if (!(st = flags.GetUint("busy-poll-us", &v)).ok()) return Fail(st);
  opts.busy_poll_us = static_cast<uint32_t>(v);
  if (!(st = flags.GetUint("buffer-pool", &v, true)).ok()) return Fail(st);
  opts.buffer_pool_bytes = v;
  opts.cpu = std::atoi(flags.Get("cpu").c_str());

  auto backend = tandem::backend::BackendFactory::Create(flags.Get("backend"));
  if (!backend.ok()) return Fail(backend.status());
  tandem::replica::ReplicaManager manager(backend->get(), flags.Get("data-dir"));
  st = manager.LoadAll();
  if (!st.ok()) TLOG_WARN(kTag, "%s", st.ToString().c_str());
  for (const std::string& spec : flags.GetAll("create-replica")) {
    tandem::replica::ReplicaConfig cfg;
    if (!(st = ParseReplicaSpec(spec, &cfg)).ok()) return Fail(st);
    auto r = manager.Create(cfg);
    if (!r.ok()) return Fail(r.status());
  }

  tandem::server::ReplicaServer server(&manager, backend->get(), opts);
  if (!(st = server.Start()).ok()) return Fail(st);
  std::printf("listening on %s:%u\n", opts.listen_address.c_str(), server.port());
  std::fflush(stdout);
  if (std::string pf = flags.Get("port-file"); !pf.empty()) {
    std::string tmp = pf + ".tmp";
    if (FILE* f = std::fopen(tmp.c_str(), "w")) {
      std::fprintf(f, "%u\n", server.port());
      std::fclose(f);
      std::rename(tmp.c_str(), pf.c_str());
    }
  }

  int sig = 0;
  sigwait(&sigs, &sig);
  TLOG_INFO(kTag, "signal %d: shutting down", sig);
  server.Stop();
  st = manager.CloseAll();
  if (!st.ok()) return Fail(st);
  TLOG_INFO(kTag, "clean shutdown");
  return 0;
}

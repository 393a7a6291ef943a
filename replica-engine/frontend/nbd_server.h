#pragma once
// NbdServer: exports one BlockDevice over the NBD protocol (fixed newstyle
// handshake, simple replies; doc/proto.md of NetworkBlockDevice/nbd) on a
// unix socket and/or a TCP address. Works with the kernel nbd client,
// qemu-img/qemu-nbd, libnbd (nbdinfo, nbdcopy) and fio's nbd engine.
//
// Export: the only export is `export_name`; "" (the default export) is
// accepted too. Transmission flags: HAS_FLAGS, SEND_FLUSH, SEND_FUA,
// SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN. Block sizes advertised with
// NBD_INFO_BLOCK_SIZE: minimum = device block_size(), preferred = max(4096,
// block_size), maximum = device max_io_size(). READ/WRITE of up to 32 MiB
// (the spec's interoperable limit) are accepted anyway and split into
// several BlockRequests, for clients that ignore the advertised maximum
// (fio's nbd engine, NBD_OPT_EXPORT_NAME clients).
//
// Each connection (nbd_connection.h) pipelines requests and replies in
// completion order, with preallocated request slots and data buffers; when
// they run out it stops reading its socket (backpressure). A protocol
// violation closes only that connection, with a WARNING log.
//
// Thread-safety: none. REQUIRES: `loop` and `device` outlive the server, and
// every method runs on loop's thread (or before the loop runs), but for
// Prepare() and the destruction of a server never started (export.h).

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/frontend/export.h"

namespace tandem::frontend {

class NbdConnection;

// Mode of the unix socket file.
inline constexpr mode_t kNbdSocketMode = 0600;

struct NbdServerOptions {
  std::string export_name;  // the only export (the volume id); NBD_OPT_LIST lists it
  // Listen on this unix socket. A stale socket file is unlinked first; any
  // other kind of file there is an error. Removed at Shutdown() and in the
  // destructor. Empty: no unix socket.
  std::string unix_path;
  // Optional "host:port" ("127.0.0.1:0", "[::1]:10809"); port 0: any (see
  // tcp_port()). Empty: no TCP.
  std::string tcp_address;
  uint32_t max_connections = 16;  // further connections are closed at accept
  // Request slots per connection: requests in flight (or whose reply is not
  // yet written) before the connection stops reading its socket.
  uint32_t max_requests_per_connection = 128;
  // A connection that has not reached the transmission phase this long after
  // accept is closed (with a WARNING), so idle or slow-handshake clients
  // cannot hold connection slots. 0: no limit.
  uint32_t handshake_timeout_ms = 30000;
  // A WRITE whose header has arrived but whose payload (at most
  // kMaxSpinPayload bytes left) is not in the socket yet: retry the
  // non-blocking recv() for up to this long before going back to epoll.
  // Clients such as fio's nbd engine send the header and the payload in two
  // send calls, and a second loop wake-up for the payload costs more than the
  // few µs the payload takes to follow (docs/performance.md, "Waiting for a
  // WRITE's payload"). Bounded per request, so a payload that never comes
  // holds the loop for at most this long once. 0: never spin.
  uint32_t write_payload_spin_us = 0;
};

// write_payload_spin_us applies only when this much payload or less is left.
inline constexpr uint32_t kMaxSpinPayload = 64 * 1024;

struct NbdServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_closed_bad_input = 0;  // protocol violations
  uint64_t requests = 0;                      // transmission requests parsed
  uint64_t errors = 0;                        // replies with a non-zero error
  uint64_t bytes_read = 0;                    // data of successful READs
  uint64_t bytes_written = 0;                 // data of successful WRITEs
  // write_payload_spin_us: WRITE payloads waited for by spinning, and the
  // spins that got payload bytes before the bound (the others went back to
  // epoll; a payload arriving in pieces may count several).
  uint64_t payload_spins = 0;
  uint64_t payload_spin_hits = 0;
};

// The Export (export.h) of kind kNbd: Describe() gives the unix socket as
// `path` and "host:port" (bound port) as `address`.
class NbdServer final : public Export, private EventLoop::Idler, private EventLoop::Ticker {
 public:
  NbdServer(EventLoop* loop, target::BlockDevice* device, NbdServerOptions options);
  // Closes everything immediately. Device requests still in flight are
  // abandoned safely: their connection's memory lives until they complete,
  // and their results are dropped.
  ~NbdServer() override;
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // Resolves the TCP address (getaddrinfo: may wait for DNS), binds and
  // listens, off the loop (export.h). INVALID_ARGUMENT (bad options or
  // address, naming it), UNAVAILABLE (bind/listen failed, naming the
  // address), FAILED_PRECONDITION (called twice, after Start or Shutdown).
  // The unix socket is created mode 0600 (owner only: whoever can connect
  // can read and write the volume).
  Status Prepare() override;
  // Adds the listening sockets to the loop and starts accepting (runs
  // Prepare() first when it was not called). FAILED_PRECONDITION (called
  // twice).
  Status Start() override;
  // The bound TCP port (useful with port 0); 0 without TCP.
  uint16_t tcp_port() const { return tcp_port_; }
  const std::string& unix_path() const { return options_.unix_path; }

  // Stops accepting (the unix socket file is removed), closes connections
  // still in the handshake, lets in-flight device requests of the others
  // finish and their replies be written (best effort), closes them, then
  // runs done(arg) on the loop (never inside this call). Idempotent: every
  // call's `done` runs once, after the drain. `done` may destroy the server.
  void Shutdown(void (*done)(void*), void* arg) override;

  ExportDescription Describe() const override;

  NbdServerStats stats() const { return stats_; }
  // Open connections (handshake or transmission).
  size_t connection_count() const { return connections_.size(); }

 private:
  friend class NbdConnection;
  class Listener;

  Status ListenUnix();
  Status ListenTcp();
  void Accept(Listener* listener);
  // Queues `conn` for Service() at the next BeforeWait.
  void MarkPending(NbdConnection* conn);
  void BeforeWait() override;
  // Closes connections whose handshake took longer than handshake_timeout_ms.
  void OnTick(uint64_t now_ns) override;
  void CloseListeners();

  EventLoop* loop_;
  target::BlockDevice* device_;
  NbdServerOptions options_;
  uint16_t tx_flags_;
  std::unique_ptr<Listener> unix_listener_;
  std::unique_ptr<Listener> tcp_listener_;
  uint16_t tcp_port_ = 0;
  bool prepared_ = false;  // listening sockets made (Prepare)
  bool started_ = false;
  bool ticking_ = false;
  bool unix_bound_ = false;  // we created the socket file (remove it at shutdown)
  bool shutting_down_ = false;
  uint64_t next_conn_id_ = 1;
  std::vector<std::unique_ptr<NbdConnection>> connections_;
  std::vector<NbdConnection*> pending_;
  std::vector<std::pair<void (*)(void*), void*>> shutdown_done_;
  NbdServerStats stats_;
};

}  // namespace tandem::frontend

#pragma once
// Export: one BlockDevice made reachable by a kernel or user-space block
// protocol — the seam between a volume target and whatever the node attaches
// (an NBD socket today, a file on a FUSE mount for `losetup`, ublk later).
// The attach layer owns "a target + its export" through this interface only.
//
// Lifecycle: construct (the implementation's own options), Prepare() once
// (optional), Start() once, Shutdown() any number of times, destroy after the
// first Shutdown's `done` ran (or without Shutdown: the destructor then tears
// down at once, abandoning in-flight requests safely).
//
// Two phases, because the loop is shared (a target's loop may be the replica
// server's: anything that blocks it stalls every volume's replica I/O):
// Prepare() does everything that may block — resolving a host name,
// binding, mounting a filesystem, starting threads — and runs on any thread
// but the loop's; Start() then only registers with the loop (fds, idlers)
// and never blocks. Start() without Prepare() runs Prepare() itself, on the
// loop thread: fine in tests and tools that own their loop.
//
// Thread-safety: Prepare() on any thread that is not the loop's (or before
// the loop runs). Start, Shutdown, Describe and the destructor on the loop
// thread, except that an export never started (Prepare only, or a Start that
// failed) may be destroyed on any thread, which then undoes Prepare
// (bounded; for FUSE an unmount, never waiting for the kernel's users). An
// implementation may run threads of its own (FUSE workers) but completes
// Shutdown's `done` on the loop thread.
// Prepare() may read the device's geometry (size, block_size, max_io_size)
// off the loop: REQUIRES they do not change while it runs (the attach layer
// prepares before anything can resize the volume).
// REQUIRES: the device and its loop outlive the export.

#include <cstdint>
#include <string>

#include "common/status.h"

namespace tandem::frontend {

enum class ExportKind : uint8_t {
  kNbd,       // NBD server on a unix socket and/or TCP (nbd_server.h)
  kFuseFile,  // one regular file on a FUSE mount, for `losetup --direct-io=on`
};

// "nbd", "fuse_file".
const char* ExportKindName(ExportKind kind);

// Counters every export keeps (since Start). Exports that have no notion of
// a connection (FUSE) report the mount as one.
struct ExportCounters {
  uint64_t connections = 0;  // open now
  uint64_t requests = 0;     // block requests received from the client
  uint64_t errors = 0;       // requests answered with an error
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
};

struct ExportDescription {
  ExportKind kind = ExportKind::kNbd;
  // Where a client finds it: the NBD unix socket, or the exported file on the
  // FUSE mount (what `losetup` is given). Empty when not listening there.
  std::string path;
  // NBD over TCP: "host:port" with the bound port; empty otherwise.
  std::string address;
  ExportCounters counters;
};

class Export {
 public:
  virtual ~Export() = default;

  // The blocking half of making the device reachable (resolves, binds,
  // mounts). Errors: INVALID_ARGUMENT (bad options or device geometry),
  // UNAVAILABLE (the kernel refused: bind, mount), FAILED_PRECONDITION
  // (called twice, after Start or after Shutdown). On error nothing is left
  // behind (no socket file, no mount).
  virtual Status Prepare() = 0;

  // Makes the device reachable: registers what Prepare() made with the loop
  // and begins serving, without blocking (runs Prepare() first when it was
  // not called). Errors as Prepare()'s; FAILED_PRECONDITION when called
  // twice. On error nothing is left behind (what Prepare made is undone
  // too); destroy the export, on any thread.
  virtual Status Start() = 0;

  // Stops accepting new requests, lets requests in flight on the device
  // finish (bounded: an implementation that depends on a kernel client gives
  // up after its documented timeout and fails what is left with EIO), removes
  // what Start created, then runs done(arg) on the loop thread — never inside
  // this call. Idempotent: every call's `done` runs once, after the drain.
  // `done` may destroy the export. `done` may be null.
  virtual void Shutdown(void (*done)(void*), void* arg) = 0;

  virtual ExportDescription Describe() const = 0;

  // The device's size() changed (a resized volume): make the new size
  // visible where the protocol can. NBD: connections opened from now on (a
  // connected client keeps the size it negotiated). FUSE file: the file's
  // size; the kernel's cached attributes are invalidated, so the next stat()
  // of the file reports it, and `losetup -c` after that resizes the loop
  // device. Default: nothing to do.
  virtual void SizeChanged() {}
};

}  // namespace tandem::frontend

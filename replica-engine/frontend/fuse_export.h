#pragma once
// FuseExport: exports one BlockDevice as a single regular file on a FUSE
// mount (libfuse3, low-level API), for `losetup --direct-io=on` to turn into
// /dev/loopN on kernels without nbd or ublk. See docs/fuse_export.md.
//
// The mount: `mount_dir` holds one file, `file_name`, mode 0600, whose size
// is the device size (it cannot grow, shrink or be truncated). The file is
// opened with FOPEN_DIRECT_IO: the page cache is bypassed, every read and
// write reaches the device. Mapping:
//   read             -> kRead (unaligned reads are served through a bounce
//                       range; reads past the end are short, as for a file)
//   write            -> kWrite (O_DSYNC/RWF_DSYNC writes carry kBlockFua; past
//                       the end: ENOSPC). A write that is not whole blocks is
//                       a read-modify-write that excludes every other write
//                       while it runs (docs/fuse_export.md).
//   fsync/fdatasync  -> kFlush
//   fallocate PUNCH_HOLE|KEEP_SIZE -> kTrim, ZERO_RANGE -> kWriteZeroes,
//                       mode 0 inside the file -> no-op (thin provisioned)
//   statfs           -> f_bsize = device block size (loop's discard granularity)
// Device errors map to errno: INVALID_ARGUMENT -> EINVAL, OUT_OF_RANGE ->
// ENOSPC, RESOURCE_EXHAUSTED -> ENOSPC, anything else -> EIO.
//
// Threads: `threads` FUSE worker threads read requests from /dev/fuse. Each
// owns one preallocated request slot (block requests inline, an aligned read
// buffer, libfuse's receive buffer); it queues the slot to the device's loop
// through a lock-free stack (one eventfd wake when the stack was empty),
// the loop submits it, and the completion wakes the worker through a futex
// on the slot's state word. No allocation and no lock per I/O.
//
// Shutdown (export.h): new requests get EIO at once; requests already on the
// device finish; then the kernel connection is aborted (fusectl), which ends
// the workers and makes any remaining user of the file — a loop device still
// attached — get EIO instead of hanging; the mount is detached lazily and
// the mount directory removed if Start created it. Bounded: no step waits for
// the kernel's users of the file.
//
// Thread-safety: as export.h — Prepare off the loop; Start/Shutdown/
// Describe/destructor on the device's loop thread (the destructor of an
// export never started on any thread). REQUIRES: root (mount(2)); device and
// loop outlive the export.

#include <cstdint>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "common/status.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/frontend/export.h"

namespace tandem::frontend {

// How requests travel between the kernel and the workers.
enum class FuseTransport : uint8_t {
  // read(2)/writev(2) on /dev/fuse: what Debian's libfuse 3.14 offers.
  kDevice,
  // FUSE over io_uring (kernel >= 6.14 with CONFIG_FUSE_IO_URING, libfuse
  // >= 3.17/3.18): not available with libfuse 3.14; Start() answers
  // UNIMPLEMENTED. The seam for when the distribution ships it.
  kIoUring,
};

struct FuseExportOptions {
  // Absolute path of the mount point. Created (0700) when missing and then
  // removed at shutdown; an existing directory must be empty. A stale FUSE
  // mount left there by a crashed engine is detached first.
  std::string mount_dir;
  // The exported file inside mount_dir (no '/').
  std::string file_name = "volume";
  // Shown in /proc/mounts as "tandem:<name>".
  std::string name = "volume";
  // Worker threads = requests in flight on the device at most. The loop
  // device issues up to its queue depth of asynchronous requests.
  uint32_t threads = 32;
  // Largest read/write the kernel sends (max_read/max_write), bytes.
  uint32_t max_request = 1u << 20;
  // Asynchronous (background) requests the kernel keeps in flight; FUSE's
  // default of 12 would cap a loop device's queue depth.
  uint32_t max_background = 64;
  FuseTransport transport = FuseTransport::kDevice;
  // Bound on the teardown's wait for the worker threads to leave the kernel.
  uint32_t teardown_timeout_ms = 5000;
};

// Test seam: called at the start of every FUSE export's mount step, on the
// thread that mounts, with the mount directory (a test makes the mount slow
// to show that it does not hold up the loop). Null (the default): nothing.
using FuseMountHook = void (*)(const std::string& mount_dir);
void SetFuseMountHookForTesting(FuseMountHook hook);

class FuseExport final : public Export {
 public:
  FuseExport(EventLoop* loop, target::BlockDevice* device, FuseExportOptions options);
  // Without a finished Shutdown: aborts the connection, fails the workers'
  // pending requests with EIO and unmounts, on this thread (bounded). Device
  // requests still in flight are abandoned safely (their memory lives until
  // they complete).
  ~FuseExport() override;
  FuseExport(const FuseExport&) = delete;
  FuseExport& operator=(const FuseExport&) = delete;

  // Mounts (and fusectl when missing) and starts the workers, off the loop
  // (export.h). INVALID_ARGUMENT (options, device geometry), UNIMPLEMENTED
  // (transport kIoUring), UNAVAILABLE (mount failed: not root, no
  // /dev/fuse...), FAILED_PRECONDITION (called twice, after Start or
  // Shutdown). Requests the workers receive before Start() wait for it.
  Status Prepare() override;
  // Hands the workers' requests to the device from now on (runs Prepare()
  // first when it was not called). FAILED_PRECONDITION (called twice).
  Status Start() override;
  void Shutdown(void (*done)(void*), void* arg) override;
  // kind kFuseFile, path = mount_dir/file_name (what losetup is given).
  ExportDescription Describe() const override;
  // The file takes the device's new size (export.h).
  void SizeChanged() override;

  // The exported file's path.
  std::string file_path() const;

  class Impl;

 private:
  Impl* impl_;  // owned; outlives us when device requests are still in flight
};

}  // namespace tandem::frontend

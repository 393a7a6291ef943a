#pragma once
// Loop devices: the node turns the FUSE file export of a volume into a block
// device (/dev/loopN) with direct I/O, so the page cache sits only above the
// loop device (in the filesystem) and never holds a second copy of the volume.
// Implemented with the kernel's loop ioctls (LOOP_CONFIGURE, Linux >= 5.8), not
// by parsing losetup's output.

#include <optional>
#include <string>

#include "common/result.h"

namespace tandem::node {

struct LoopOptions {
  bool direct_io = true;  // LO_FLAGS_DIRECT_IO: needs 4 KiB-aligned backing I/O
  bool read_only = false;
  // The block size the loop device advertises; 4096 matches the volume's.
  unsigned logical_block_size = 4096;
};

// Attaches `backing_file` to a free loop device and returns its path
// ("/dev/loop3"). If the file is already attached to a loop device, returns
// that one instead (idempotent: a retried NodeStage must not stack devices).
// Errors: NOT_FOUND (file), UNAVAILABLE (no loop support), INTERNAL.
Result<std::string> AttachLoop(const std::string& backing_file, const LoopOptions& options = {});

// Detaches a loop device. Detaching a device that is not attached is OK. While
// the device is still open elsewhere (mounted), the kernel defers the detach to
// its last close (autoclear) and this returns OK: unmount first for an
// immediate detach.
Status DetachLoop(const std::string& device);

// The loop device backed by `backing_file`, if any (from /sys/block/loop*/loop/backing_file).
Result<std::optional<std::string>> FindLoopByBackingFile(const std::string& backing_file);

// The backing file of a loop device ("" when the device is not attached).
Result<std::string> LoopBackingFile(const std::string& device);

// Re-reads the backing file's size (after a volume grew): LOOP_SET_CAPACITY.
Status RefreshLoopCapacity(const std::string& device);

// Size in bytes of a block device (BLKGETSIZE64).
Result<uint64_t> BlockDeviceSize(const std::string& device);

}  // namespace tandem::node

#pragma once
// The fusectl filesystem (/sys/fs/fuse/connections): the only way to end a
// FUSE connection whose file is still in use (a loop device attached to it)
// without waiting for its users. Writing to <conn>/abort fails every queued
// and future request of that connection (the kernel users see EIO/ENOTCONN)
// and wakes the daemon's readers with ENODEV.

#include <string>

#include "common/status.h"

namespace tandem::frontend {

inline constexpr const char* kFuseControlDir = "/sys/fs/fuse/connections";

// Mounts fusectl on kFuseControlDir unless it is mounted already (systemd
// usually does it; containers often do not). UNAVAILABLE when that fails.
Status EnsureFuseControlMounted();

// Aborts connection `conn_id` (its directory name: the mount's device
// number). NOT_FOUND when it is gone already (the mount ended), UNAVAILABLE
// when fusectl is not there.
Status AbortFuseConnection(const std::string& conn_id);

}  // namespace tandem::frontend

#pragma once
// Filesystems on a volume's block device: probe, format, mount, grow, stats.
// Probing uses libblkid (util-linux); formatting and growing run the distro's
// mkfs/resize tools through RunCommand, mounting uses mount(8) so every option
// a StorageClass may pass in mountOptions is understood exactly as on any node.

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::node {

struct ProbeResult {
  std::string fs_type;          // "ext4", "xfs", ... or "" when none was found
  std::string partition_table;  // "gpt", "dos", ... or ""
};

// What is on `device`. Errors: NOT_FOUND, INTERNAL (ambiguous signatures).
Result<ProbeResult> ProbeDevice(const std::string& device);

// Supported filesystem types for NodeStage: ext4 and xfs.
bool IsSupportedFilesystem(const std::string& fs_type);

// Formats `device` with `fs_type` unless it already has a filesystem: the
// volume's data is never formatted away. Returns the filesystem that is on the
// device afterwards. Errors: FAILED_PRECONDITION when a different filesystem or
// a partition table is found (we never reformat), INVALID_ARGUMENT for an
// unsupported type.
Result<std::string> FormatIfEmpty(const std::string& device, const std::string& fs_type);

// mount -t fs_type -o options source target. The target directory is created.
// Idempotent: mounting the same source at a target where it is already
// mounted is OK; a different source there is FAILED_PRECONDITION.
Status Mount(const std::string& source, const std::string& target, const std::string& fs_type,
             const std::vector<std::string>& options);

// A bind mount of `source` (a directory or a device node) onto `target`,
// remounted read-only when asked. For a device node, `target` is created as an
// empty file (as CSI's Block publish requires). Idempotent like Mount.
Status BindMount(const std::string& source, const std::string& target, bool read_only);

// Unmounts `target`; OK when nothing is mounted there (also when it does not
// exist). Does not remove the directory.
Status Unmount(const std::string& target);

// The mount source ("/dev/loop3") at exactly `target`, or "" if none.
Result<std::string> MountSourceAt(const std::string& target);

// Grows the filesystem mounted at `mount_point` (on `device`) to the device's
// size. ext4 needs CAP_SYS_RESOURCE (FAILED_PRECONDITION without it).
Status GrowFilesystem(const std::string& device, const std::string& mount_point,
                      const std::string& fs_type);

struct FilesystemStats {
  uint64_t total_bytes = 0, available_bytes = 0, used_bytes = 0;
  uint64_t total_inodes = 0, free_inodes = 0, used_inodes = 0;
};
bool HasSysResourceCapability();

Result<FilesystemStats> StatFilesystem(const std::string& path);

}  // namespace tandem::node

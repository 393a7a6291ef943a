#include "node-plugin/filesystem.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/mount_info.h"
#include "node-plugin/command.h"
#include "node-plugin/real_path.h"

namespace tandem::node {
namespace {

Status EnsureDirectory(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::Internal("create directory " + path + ": " + ec.message());
  return Status::Ok();
}

Status EnsureFile(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) return Status::Internal("create directory for " + path + ": " + ec.message());
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return PosixError("create " + path, errno);
  close(fd);
  return Status::Ok();
}

bool SameInode(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (stat(a.c_str(), &sa) != 0 || stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

bool IsSupportedFilesystem(const std::string& fs_type) {
  return fs_type == "ext4" || fs_type == "xfs";
}

Result<ProbeResult> ProbeDevice(const std::string& device) {
  blkid_probe probe = blkid_new_probe_from_filename(device.c_str());
  if (probe == nullptr) {
    int err = errno;
    return PosixError("blkid probe " + device, err ? err : EIO);
  }
  blkid_probe_enable_superblocks(probe, 1);
  blkid_probe_set_superblocks_flags(probe, BLKID_SUBLKS_TYPE);
  blkid_probe_enable_partitions(probe, 1);
  int rc = blkid_do_safeprobe(probe);
  ProbeResult result;
  if (rc == 0) {
    const char* value = nullptr;
    if (blkid_probe_lookup_value(probe, "TYPE", &value, nullptr) == 0 && value)
      result.fs_type = value;
    if (blkid_probe_lookup_value(probe, "PTTYPE", &value, nullptr) == 0 && value) {
      result.partition_table = value;
    }
  }
  blkid_free_probe(probe);
  if (rc == -2) {
    return Status::Internal(device + " carries several conflicting signatures; refusing to guess");
  }
  if (rc < 0) return Status::Internal("blkid could not probe " + device);
  return result;
}

namespace {

// True when the first 4 KiB of `device` carry `fs_type`'s own superblock:
// ext4's magic 0xEF53 at byte 1080 with the extents feature (so ext2/3 take
// the full probe), or xfs's "XFSB" at byte 0. A full blkid safe-probe reads
// dozens of signature locations, one round trip to the replicas each (tens of
// ms of every attach); this answers the common case — the filesystem the
// volume was formatted with — in one read. Anything else takes the full
// probe, so a device is still never formatted over a signature.
bool HasOwnSuperblock(const std::string& device, const std::string& fs_type) {
  int fd = open(device.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return false;
  void* buf = nullptr;
  bool found = false;
  if (posix_memalign(&buf, 4096, 4096) == 0 && pread(fd, buf, 4096, 0) == 4096) {
    const auto* b = static_cast<const unsigned char*>(buf);
    if (fs_type == "ext4") {
      const unsigned char* sb = b + 1024;
      uint32_t incompat =
          sb[0x60] | sb[0x61] << 8 | sb[0x62] << 16 | static_cast<uint32_t>(sb[0x63]) << 24;
      found = sb[0x38] == 0x53 && sb[0x39] == 0xEF && (incompat & 0x40) != 0;  // EXTENTS
    } else if (fs_type == "xfs") {
      found = b[0] == 'X' && b[1] == 'F' && b[2] == 'S' && b[3] == 'B';
    }
  }
  free(buf);
  close(fd);
  return found;
}

}  // namespace

Result<std::string> FormatIfEmpty(const std::string& device, const std::string& fs_type) {
  if (!IsSupportedFilesystem(fs_type)) {
    return Status::InvalidArgument("unsupported fsType '" + fs_type + "' (supported: ext4, xfs)");
  }
  if (HasOwnSuperblock(device, fs_type)) return fs_type;
  TANDEM_ASSIGN_OR_RETURN(ProbeResult found, ProbeDevice(device));
  if (!found.partition_table.empty()) {
    return Status::FailedPrecondition(device + " has a " + found.partition_table +
                                      " partition table; not formatting it");
  }
  if (!found.fs_type.empty()) {
    if (found.fs_type != fs_type) {
      return Status::FailedPrecondition(device + " already holds " + found.fs_type + ", not " +
                                        fs_type +
                                        "; not reformatting (the volume's data would be lost)");
    }
    return found.fs_type;
  }
  // The volume is new and thin: skip the discard pass (its holes already read
  // as zeros) and let ext4 initialise inode tables lazily.
  std::vector<std::string> argv;
  if (fs_type == "ext4") {
    argv = {"mkfs.ext4",
            "-F",
            "-q",
            "-b",
            "4096",
            "-E",
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
            device};
  } else {
    argv = {"mkfs.xfs", "-q", "-K", device};
  }
  TANDEM_RETURN_IF_ERROR(RunChecked(argv));
  return fs_type;
}

Result<std::string> MountSourceAt(const std::string& target) {
  const std::string want = RealPath(target);
  TANDEM_ASSIGN_OR_RETURN(std::vector<MountInfoEntry> mounts, ReadMountInfo());
  std::string source;
  for (const MountInfoEntry& m : mounts) {
    if (m.mount_point == want) source = m.source;  // the last (topmost) mount wins
  }
  return source;
}

// mount(2) without forking mount(8) (~10 ms of every attach on a loaded
// machine): the generic flags by name, every other option handed to the
// filesystem as data. False when the kernel refuses (an option only mount(8)
// knows, such as "defaults"): the caller then runs mount(8), which also words
// the error.
static bool MountDirectly(const std::string& source, const std::string& target,
                          const std::string& fs_type, const std::vector<std::string>& options) {
  static const std::map<std::string, unsigned long> kFlags = {{"ro", MS_RDONLY},
                                                              {"nosuid", MS_NOSUID},
                                                              {"nodev", MS_NODEV},
                                                              {"noexec", MS_NOEXEC},
                                                              {"sync", MS_SYNCHRONOUS},
                                                              {"noatime", MS_NOATIME},
                                                              {"nodiratime", MS_NODIRATIME},
                                                              {"relatime", MS_RELATIME},
                                                              {"dirsync", MS_DIRSYNC}};
  unsigned long flags = 0;
  std::string data;
  for (const auto& o : options) {
    if (auto f = kFlags.find(o); f != kFlags.end()) {
      flags |= f->second;
    } else {
      data += (data.empty() ? "" : ",") + o;
    }
  }
  return mount(source.c_str(), target.c_str(), fs_type.c_str(), flags,
               data.empty() ? nullptr : data.c_str()) == 0;
}

Status Mount(const std::string& source, const std::string& target, const std::string& fs_type,
             const std::vector<std::string>& options) {
  TANDEM_ASSIGN_OR_RETURN(std::string mounted, MountSourceAt(target));
  if (!mounted.empty()) {
    if (RealPath(mounted) == RealPath(source)) return Status::Ok();
    return Status::FailedPrecondition(target + " already has " + mounted + " mounted, not " +
                                      source);
  }
  TANDEM_RETURN_IF_ERROR(EnsureDirectory(target));
  std::vector<std::string> argv = {"mount", "-t", fs_type};
  std::string joined;
  for (const auto& o : options) {
    if (o.find(',') != std::string::npos || o.empty()) {
      return Status::InvalidArgument("mount option '" + o + "' is empty or contains a comma");
    }
    joined += (joined.empty() ? "" : ",") + o;
  }
  if (MountDirectly(source, target, fs_type, options)) return Status::Ok();
  if (!joined.empty()) {
    argv.push_back("-o");
    argv.push_back(joined);
  }
  argv.push_back(source);
  argv.push_back(target);
  return RunChecked(argv);
}

Status BindMount(const std::string& source, const std::string& target, bool read_only) {
  struct stat st;
  if (stat(source.c_str(), &st) != 0) return PosixError("stat " + source, errno);
  TANDEM_ASSIGN_OR_RETURN(std::string mounted, MountSourceAt(target));
  if (!mounted.empty()) {
    if (SameInode(source, target)) return Status::Ok();
    return Status::FailedPrecondition(target + " already has something else mounted (" + mounted +
                                      ")");
  }
  TANDEM_RETURN_IF_ERROR(S_ISDIR(st.st_mode) ? EnsureDirectory(target) : EnsureFile(target));
  if (mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return PosixError("bind mount " + source + " on " + target, errno);
  }
  // A bind mount ignores MS_RDONLY on creation: read-only needs a remount.
  if (read_only &&
      mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    int err = errno;
    umount2(target.c_str(), 0);
    return PosixError("remount read-only " + target, err);
  }
  return Status::Ok();
}

Status Unmount(const std::string& target) {
  // Bounded: stacked mounts at one target are taken off one by one.
  for (int i = 0; i < 8; ++i) {
    TANDEM_ASSIGN_OR_RETURN(std::string mounted, MountSourceAt(target));
    if (mounted.empty()) return Status::Ok();
    if (umount2(target.c_str(), UMOUNT_NOFOLLOW) != 0) {
      if (errno == EINVAL || errno == ENOENT) return Status::Ok();
      if (errno == EBUSY)
        return Status::FailedPrecondition(target + " is busy (files open); not unmounted");
      return PosixError("umount " + target, errno);
    }
  }
  return Status::Internal(target + " still mounted after 8 unmounts");
}

bool HasSysResourceCapability() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      uint64_t caps = std::strtoull(line.c_str() + 7, nullptr, 16);
      return (caps >> 24) & 1;  // CAP_SYS_RESOURCE
    }
  }
  return false;
}

Status GrowFilesystem(const std::string& device, const std::string& mount_point,
                      const std::string& fs_type) {
  if (fs_type == "ext4") {
    // The kernel's online ext4 resize demands CAP_SYS_RESOURCE (EPERM and a
    // puzzling "Permission denied" from resize2fs otherwise).
    if (!HasSysResourceCapability()) {
      return Status::FailedPrecondition(
          "growing ext4 online needs CAP_SYS_RESOURCE, which tandem-node lacks: add it to the "
          "node plugin container's capabilities");
    }
    return RunChecked({"resize2fs", device});
  }
  if (fs_type == "xfs") return RunChecked({"xfs_growfs", mount_point});
  return Status::InvalidArgument("cannot grow filesystem type '" + fs_type + "'");
}

Result<FilesystemStats> StatFilesystem(const std::string& path) {
  struct statvfs vfs;
  if (statvfs(path.c_str(), &vfs) != 0) return PosixError("statvfs " + path, errno);
  FilesystemStats s;
  s.total_bytes = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  s.available_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  s.used_bytes = s.total_bytes - static_cast<uint64_t>(vfs.f_bfree) * vfs.f_frsize;
  s.total_inodes = vfs.f_files;
  s.free_inodes = vfs.f_ffree;
  s.used_inodes = vfs.f_files - vfs.f_ffree;
  return s;
}

}  // namespace tandem::node

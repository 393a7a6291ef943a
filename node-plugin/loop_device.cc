#include "node-plugin/loop_device.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/unique_fd.h"
#include "node-plugin/real_path.h"

namespace tandem::node {
namespace {

std::string ReadSysfsLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "/dev/loop3" -> "loop3".
std::string DeviceName(const std::string& device) {
  auto slash = device.rfind('/');
  return slash == std::string::npos ? device : device.substr(slash + 1);
}

}  // namespace

Result<std::string> LoopBackingFile(const std::string& device) {
  // The kernel appends " (deleted)" when the backing file was unlinked.
  std::string name = DeviceName(device);
  if (name.rfind("loop", 0) != 0) return Status::InvalidArgument(device + " is not a loop device");
  return ReadSysfsLine("/sys/block/" + name + "/loop/backing_file");
}

Result<std::optional<std::string>> FindLoopByBackingFile(const std::string& backing_file) {
  const std::string want = RealPath(backing_file);
  DIR* dir = opendir("/sys/block");
  if (dir == nullptr) return PosixError("opendir /sys/block", errno);
  std::optional<std::string> found;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind("loop", 0) != 0) continue;
    std::string file = ReadSysfsLine("/sys/block/" + name + "/loop/backing_file");
    if (!file.empty() && file == want) {
      found = "/dev/" + name;
      break;
    }
  }
  closedir(dir);
  return found;
}

Result<std::string> AttachLoop(const std::string& backing_file, const LoopOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(auto existing, FindLoopByBackingFile(backing_file));
  if (existing) return *existing;

  UniqueFd file(open(backing_file.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!file.valid()) return PosixError("open " + backing_file, errno);
  UniqueFd control(open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control.valid()) {
    return Status::Unavailable(std::string("no loop device support: open /dev/loop-control: ") +
                               strerror(errno));
  }
  // Another process may take the free device between GET_FREE and CONFIGURE
  // (EBUSY): ask again, a bounded number of times.
  for (int attempt = 0; attempt < 16; ++attempt) {
    int index = ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (index < 0) return PosixError("LOOP_CTL_GET_FREE", errno);
    std::string device = "/dev/loop" + std::to_string(index);
    UniqueFd loop(open(device.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!loop.valid()) return PosixError("open " + device, errno);
    loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = static_cast<uint32_t>(file.get());
    config.block_size = options.logical_block_size;
    config.info.lo_flags =
        (options.direct_io ? LO_FLAGS_DIRECT_IO : 0) | (options.read_only ? LO_FLAGS_READ_ONLY : 0);
    std::string path = RealPath(backing_file);
    strncpy(reinterpret_cast<char*>(config.info.lo_file_name), path.c_str(), LO_NAME_SIZE - 1);
    if (ioctl(loop.get(), LOOP_CONFIGURE, &config) == 0) {
      // The kernel silently falls back to buffered I/O when the backing file
      // cannot do direct I/O; the caller asked for no second cache, so say so.
      if (options.direct_io) {
        std::string dio = ReadSysfsLine("/sys/block/loop" + std::to_string(index) + "/loop/dio");
        if (dio != "1") {
          ioctl(loop.get(), LOOP_CLR_FD, 0);
          return Status::FailedPrecondition(backing_file +
                                            " does not support direct I/O through a loop device");
        }
      }
      return device;
    }
    if (errno != EBUSY)
      return PosixError("LOOP_CONFIGURE " + device + " <- " + backing_file, errno);
  }
  return Status::Unavailable("no free loop device after 16 attempts (concurrent attaches?)");
}

Status DetachLoop(const std::string& device) {
  UniqueFd loop(open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!loop.valid()) {
    if (errno == ENOENT || errno == ENXIO) return Status::Ok();
    return PosixError("open " + device, errno);
  }
  // Older kernels answer EBUSY while another opener (a udev probe right after
  // an unmount) holds the device: retry briefly.
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (ioctl(loop.get(), LOOP_CLR_FD, 0) == 0) return Status::Ok();
    if (errno == ENXIO) return Status::Ok();  // not attached
    if (errno != EBUSY) return PosixError("LOOP_CLR_FD " + device, errno);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::FailedPrecondition(device +
                                    " is still in use (mounted or held open); cannot detach");
}

Status RefreshLoopCapacity(const std::string& device) {
  UniqueFd loop(open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!loop.valid()) return PosixError("open " + device, errno);
  if (ioctl(loop.get(), LOOP_SET_CAPACITY, 0) != 0)
    return PosixError("LOOP_SET_CAPACITY " + device, errno);
  return Status::Ok();
}

Result<uint64_t> BlockDeviceSize(const std::string& device) {
  UniqueFd fd(open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open " + device, errno);
  uint64_t size = 0;
  if (ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return PosixError("BLKGETSIZE64 " + device, errno);
  return size;
}

}  // namespace tandem::node

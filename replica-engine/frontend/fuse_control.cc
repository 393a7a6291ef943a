#include "replica-engine/frontend/fuse_control.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>

namespace tandem::frontend {

namespace {
// include/uapi/linux/magic.h
constexpr long kFuseCtlSuperMagic = 0x65735543;
}  // namespace

Status EnsureFuseControlMounted() {
  struct statfs sf;
  if (statfs(kFuseControlDir, &sf) == 0 && sf.f_type == kFuseCtlSuperMagic) return Status::Ok();
  if (mount("fusectl", kFuseControlDir, "fusectl", 0, nullptr) != 0 && errno != EBUSY) {
    return Status::Unavailable(std::string("cannot mount fusectl on ") + kFuseControlDir + ": " +
                               PosixError("mount", errno).message());
  }
  return Status::Ok();
}

Status AbortFuseConnection(const std::string& conn_id) {
  std::string path = std::string(kFuseControlDir) + "/" + conn_id + "/abort";
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    struct statfs sf;
    if (statfs(kFuseControlDir, &sf) != 0 || sf.f_type != kFuseCtlSuperMagic) {
      return Status::Unavailable(std::string("fusectl is not mounted on ") + kFuseControlDir);
    }
    return PosixError("open " + path, err);
  }
  ssize_t n = write(fd, "1", 1);
  int err = errno;
  close(fd);
  if (n != 1) return PosixError("write " + path, err);
  return Status::Ok();
}

}  // namespace tandem::frontend

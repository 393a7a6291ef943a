#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/unique_fd.h"

namespace tandem {

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open directory " + dir, errno);
  if (::fsync(fd.get()) != 0) return PosixError("fsync directory " + dir, errno);
  return Status::Ok();
}

std::string DirName(const std::string& path) {
  const size_t end = path.find_last_not_of('/');
  if (end == std::string::npos) return "/";
  const size_t slash = path.rfind('/', end);
  if (slash == std::string::npos) return ".";
  const size_t dir_end = path.find_last_not_of('/', slash);
  return dir_end == std::string::npos ? "/" : path.substr(0, dir_end + 1);
}

Status WriteFileAtomically(const std::string& path, std::string_view contents, mode_t mode) {
  const std::string tmp = path + ".tmp";
  Status st;
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd.valid()) return PosixError("create " + tmp, errno);
    const char* p = contents.data();
    size_t left = contents.size();
    while (left > 0 && st.ok()) {
      const ssize_t w = ::write(fd.get(), p, left);
      if (w < 0) {
        if (errno != EINTR) st = PosixError("write " + tmp, errno);
        continue;
      }
      p += w;
      left -= static_cast<size_t>(w);
    }
    // The data must be durable before the rename makes it the file's
    // contents, else a crash can leave the new name on an empty file.
    if (st.ok() && ::fsync(fd.get()) != 0) st = PosixError("fsync " + tmp, errno);
  }
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    st = PosixError("rename " + tmp + " to " + path, errno);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return SyncDir(DirName(path));
}

}  // namespace tandem

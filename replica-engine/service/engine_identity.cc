#include "replica-engine/service/engine_identity.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>

#include "common/file_util.h"

namespace tandem::service {

namespace {

Result<uint64_t> Parse(const std::string& path, std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  uint64_t v = 0;
  bool ok = text.size() == 16;
  for (char ch : text) {
    int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : -1;
    if (d < 0) ok = false;
    v = (v << 4) | static_cast<uint64_t>(d < 0 ? 0 : d);
  }
  if (!ok || v == 0) {
    return Status::DataLoss(path + ": not an engine identity (16 lowercase hex digits, not all 0)" +
                            "; restore it from a backup, or remove it only if no volume is " +
                            "attached through this engine");
  }
  return v;
}

}  // namespace

Result<uint64_t> LoadOrCreateEngineIdentity(const std::string& data_dir) {
  const std::string path = data_dir + "/" + kEngineIdentityFile;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[64];
    ssize_t n = read(fd, buf, sizeof(buf));
    int err = errno;
    close(fd);
    if (n < 0) return PosixError("read " + path, err);
    return Parse(path, std::string(buf, static_cast<size_t>(n)));
  }
  if (errno != ENOENT) return PosixError("open " + path, errno);
  if (mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return PosixError("mkdir " + data_dir, errno);
  }
  uint64_t v = 0;
  while (v == 0) {
    if (getrandom(&v, sizeof(v), 0) != static_cast<ssize_t>(sizeof(v))) {
      return PosixError("getrandom for " + path, errno);
    }
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%016" PRIx64 "\n", v);
  TANDEM_RETURN_IF_ERROR(WriteFileAtomically(path, text, 0600));
  return v;
}

}  // namespace tandem::service

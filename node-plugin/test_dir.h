#pragma once
// A scratch directory on a disk filesystem (loop devices with direct I/O need
// O_DIRECT on the backing file, which tmpfs lacks), removed with its contents.

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace tandem::node {

class TestDir {
 public:
  TestDir() {
    char tmpl[] = "/var/tmp/tandem-node-test.XXXXXX";
    path_ = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TestDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Loop devices, mkfs and mount need root and /dev/loop-control.
inline bool CanAttachLoops() {
  return geteuid() == 0 && access("/dev/loop-control", R_OK | W_OK) == 0;
}

}  // namespace tandem::node

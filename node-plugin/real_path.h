#pragma once
// RealPath: the canonical form of a path (symlinks and "..") the kernel shows
// in /proc/self/mountinfo and /sys/block/loop*/loop/backing_file, so ours
// compare equal to them; the path itself when it cannot be resolved.

#include <climits>
#include <cstdlib>
#include <string>

namespace tandem::node {

inline std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) return path;
  return buf;
}

}  // namespace tandem::node

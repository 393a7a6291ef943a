#pragma once
// The mount table as the kernel shows it (/proc/self/mountinfo): what the
// node plugin checks before mounting or unmounting, and what test harnesses
// clean up after a killed engine left a FUSE mount behind.

#include <string>
#include <vector>

#include "common/result.h"

namespace tandem {

struct MountInfoEntry {
  std::string mount_point;
  std::string fs_type;
  std::string source;
};

// Every mount, in the kernel's order (a later entry at the same mount point
// is mounted over the earlier one). INTERNAL when the file cannot be read.
Result<std::vector<MountInfoEntry>> ReadMountInfo(const char* path = "/proc/self/mountinfo");

// Undoes mountinfo's escapes: space, tab, newline and backslash appear as \ooo.
std::string UnescapeMountInfo(const std::string& s);

}  // namespace tandem

#include "common/mount_info.h"

#include <fstream>
#include <sstream>

namespace tandem {

std::string UnescapeMountInfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; ++k) {
        const char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok && v < 256) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

Result<std::vector<MountInfoEntry>> ReadMountInfo(const char* path) {
  std::ifstream in(path);
  if (!in) return Status::Internal(std::string("cannot read ") + path);
  std::vector<MountInfoEntry> mounts;
  for (std::string line; std::getline(in, line);) {
    // id parent major:minor root mount_point options [optional...] - fstype source super
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, field;
    if (!(fields >> id >> parent >> devno >> root >> mount_point)) continue;
    while (fields >> field && field != "-") {
    }
    MountInfoEntry e;
    e.mount_point = UnescapeMountInfo(mount_point);
    std::string fs_type, source;
    fields >> fs_type >> source;
    e.fs_type = fs_type;
    e.source = UnescapeMountInfo(source);
    mounts.push_back(std::move(e));
  }
  return mounts;
}

}  // namespace tandem

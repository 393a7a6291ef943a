#include "node-plugin/node_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/file_util.h"
#include "common/id.h"

namespace tandem::node {
namespace {

constexpr const char* kSuffix = ".staged";

// Values never contain newlines (paths from kubelet, ids validated), but a
// hostile path must not forge a second key: refuse it.
Status CheckValue(const std::string& v) {
  if (v.find('\n') != std::string::npos) return Status::InvalidArgument("value contains a newline");
  return Status::Ok();
}

Result<StagedVolume> Parse(const std::string& path) {
  std::ifstream in(path);
  if (!in) return PosixError("open " + path, errno);
  StagedVolume v;
  std::string line;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "volume_id")
      v.volume_id = value;
    else if (key == "staging_path")
      v.staging_path = value;
    else if (key == "export_path")
      v.export_path = value;
    else if (key == "device")
      v.device = value;
    else if (key == "fs_type")
      v.fs_type = value;
    else if (key == "block")
      v.block = value == "1";
    else if (key == "read_only")
      v.read_only = value == "1";
    else if (key == "epoch")
      std::from_chars(value.data(), value.data() + value.size(), v.epoch);
  }
  if (v.volume_id.empty()) return Status::DataLoss(path + " names no volume");
  return v;
}

}  // namespace

Status ValidateVolumeId(const std::string& id) { return ValidateId("volume_id", id); }

Result<NodeState> NodeState::Open(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return PosixError("mkdir " + dir, errno);
  return NodeState(dir);
}

std::string NodeState::PathOf(const std::string& volume_id) const {
  return dir_ + "/" + volume_id + kSuffix;
}

Status NodeState::Put(const StagedVolume& v) {
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(v.volume_id));
  for (const auto* s : {&v.staging_path, &v.export_path, &v.device, &v.fs_type}) {
    TANDEM_RETURN_IF_ERROR(CheckValue(*s));
  }
  std::ostringstream out;
  out << "volume_id=" << v.volume_id << "\nstaging_path=" << v.staging_path
      << "\nexport_path=" << v.export_path << "\ndevice=" << v.device << "\nfs_type=" << v.fs_type
      << "\nblock=" << (v.block ? 1 : 0) << "\nread_only=" << (v.read_only ? 1 : 0)
      << "\nepoch=" << v.epoch << "\n";
  return WriteFileAtomically(PathOf(v.volume_id), out.str(), 0600);
}

Result<std::optional<StagedVolume>> NodeState::Get(const std::string& volume_id) const {
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  if (access(PathOf(volume_id).c_str(), F_OK) != 0) return std::optional<StagedVolume>();
  TANDEM_ASSIGN_OR_RETURN(StagedVolume v, Parse(PathOf(volume_id)));
  return std::optional<StagedVolume>(std::move(v));
}

Result<std::vector<StagedVolume>> NodeState::List() const {
  DIR* d = opendir(dir_.c_str());
  if (d == nullptr) return PosixError("opendir " + dir_, errno);
  std::vector<StagedVolume> out;
  Status error;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() <= strlen(kSuffix) ||
        name.compare(name.size() - strlen(kSuffix), std::string::npos, kSuffix) != 0) {
      continue;
    }
    auto v = Parse(dir_ + "/" + name);
    if (!v.ok()) {
      error = v.status();
      continue;
    }
    out.push_back(std::move(*v));
  }
  closedir(d);
  if (!error.ok()) return error;
  return out;
}

Status NodeState::Remove(const std::string& volume_id) {
  TANDEM_RETURN_IF_ERROR(ValidateVolumeId(volume_id));
  if (unlink(PathOf(volume_id).c_str()) != 0 && errno != ENOENT) {
    return PosixError("remove state of " + volume_id, errno);
  }
  return SyncDir(dir_);
}

}  // namespace tandem::node

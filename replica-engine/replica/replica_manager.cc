#include "replica-engine/replica/replica_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "common/file_util.h"
#include "common/logging.h"

namespace tandem::replica {
namespace {

constexpr char kTag[] = "replica_manager";

Status EnsureDir(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::create_directories(path, ec)) {
    // Made by us: the replicas' root is the engine's alone (0700); a root
    // the operator made keeps the mode they gave it.
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  }
  if (ec) return PosixError("create directory " + path, ec.value());
  return Status::Ok();
}

bool IsDir(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
}

bool Exists(const std::string& path) {
  struct stat sb;
  return ::lstat(path.c_str(), &sb) == 0;
}

Status UnlinkIfPresent(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return PosixError("unlink " + path, errno);
  return Status::Ok();
}

// Names the first field in which an existing replica differs from a requested
// config, or returns "" when they match.
std::string Difference(const ReplicaSummary& md, const ReplicaConfig& c) {
  auto diff = [](const char* field, const std::string& have, const std::string& want) {
    return std::string(field) + " is " + have + ", requested " + want;
  };
  if (md.replica_id != c.replica_id) return diff("replica_id", md.replica_id, c.replica_id);
  if (md.size != c.size) return diff("size", std::to_string(md.size), std::to_string(c.size));
  if (md.block_size != c.block_size) {
    return diff("block_size", std::to_string(md.block_size), std::to_string(c.block_size));
  }
  if (md.dirty_region_size != c.dirty_region_size) {
    return diff("dirty_region_size", std::to_string(md.dirty_region_size),
                std::to_string(c.dirty_region_size));
  }
  if (md.data_path != c.data_path) {
    return diff("data_path", "\"" + md.data_path + "\"", "\"" + c.data_path + "\"");
  }
  return "";
}

}  // namespace

ReplicaManager::ReplicaManager(backend::StorageBackend* backend, std::string root)
    : backend_(backend), root_(std::move(root)) {}

// Replicas not CloseAll()ed are released unclean (their destructor closes the
// fd), which the next Open reports through was_clean().
ReplicaManager::~ReplicaManager() = default;

Status ReplicaManager::LoadAll() {
  MutexLock lock(&mu_);
  TANDEM_RETURN_IF_ERROR(EnsureDir(root_));
  DIR* d = ::opendir(root_.c_str());
  if (d == nullptr) return PosixError("opendir " + root_, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  ::closedir(d);

  int loaded = 0;
  int failed = 0;
  Status first_error;
  for (const std::string& name : names) {
    const std::string dir = root_ + "/" + name;
    // Only directories holding a meta file are replicas; anything else (stray
    // files, a directory left by an interrupted create) is not ours to judge.
    if (!IsDir(dir) || !Exists(dir + "/meta")) continue;
    if (replicas_.count(name) != 0) continue;  // already loaded
    Status st;
    Result<std::unique_ptr<Replica>> r = Replica::Open(backend_, dir);
    if (!r.ok()) {
      st = r.status();
    } else if ((*r)->metadata().volume_id != name) {
      // The directory name is the lookup key; a mismatch means the directory
      // was renamed or copied by hand, and serving it under either name could
      // hand a target the wrong volume.
      st = Status::FailedPrecondition(dir + " holds volume " + (*r)->metadata().volume_id);
    }
    if (!st.ok()) {
      TLOG_ERROR(kTag, "skipping replica in %s: %s", dir.c_str(), st.ToString().c_str());
      if (failed++ == 0) first_error = st;
      continue;
    }
    replicas_.emplace(name, std::shared_ptr<Replica>(std::move(*r)));
    ++loaded;
  }
  TLOG_INFO(kTag, "loaded %d replica(s) from %s, %d failed", loaded, root_.c_str(), failed);
  if (failed > 0) {
    return Status(first_error.code(), std::to_string(failed) + " replica(s) under " + root_ +
                                          " failed to load; first: " + first_error.message());
  }
  return Status::Ok();
}

Result<std::shared_ptr<Replica>> ReplicaManager::Create(const ReplicaConfig& config) {
  // Validated before the id is used as a path component.
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", config.volume_id));
  MutexLock lock(&mu_);
  if (deleting_.count(config.volume_id) != 0) {
    return Status::Unavailable("replica of volume " + config.volume_id +
                               " is being deleted; retry when the delete is done");
  }
  auto it = replicas_.find(config.volume_id);
  if (it != replicas_.end()) {
    // The summary, not metadata(): the server's loop may be changing the
    // record right now.
    std::string diff = Difference(it->second->summary(), config);
    if (diff.empty()) return it->second;
    return Status::AlreadyExists("replica of volume " + config.volume_id +
                                 " exists with a different config: " + diff);
  }
  TANDEM_RETURN_IF_ERROR(EnsureDir(root_));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Replica> r,
                          Replica::Create(backend_, root_ + "/" + config.volume_id, config));
  std::shared_ptr<Replica> shared(std::move(r));
  replicas_.emplace(config.volume_id, shared);
  return shared;
}

Result<std::shared_ptr<Replica>> ReplicaManager::Get(const std::string& volume_id) const {
  MutexLock lock(&mu_);
  if (deleting_.count(volume_id) != 0) {
    return Status::NotFound("replica of volume " + volume_id + " is being deleted");
  }
  auto it = replicas_.find(volume_id);
  if (it == replicas_.end()) {
    return Status::NotFound("no replica of volume " + volume_id + " on this node");
  }
  return it->second;
}

void ReplicaManager::BeginDelete(const std::string& volume_id) {
  MutexLock lock(&mu_);
  deleting_.insert(volume_id);
}

void ReplicaManager::EndDelete(const std::string& volume_id) {
  MutexLock lock(&mu_);
  deleting_.erase(volume_id);
}

bool ReplicaManager::IsDeleting(const std::string& volume_id) const {
  MutexLock lock(&mu_);
  return deleting_.count(volume_id) != 0;
}

Status ReplicaManager::Delete(const std::string& volume_id) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", volume_id));
  MutexLock lock(&mu_);
  // Whatever happens below, the delete is over: Get() may find the volume
  // again once it is re-created.
  struct Unmark {
    std::unordered_set<std::string>* set;
    const std::string& id;
    ~Unmark() { set->erase(id); }
  } unmark{&deleting_, volume_id};
  auto it = replicas_.find(volume_id);
  if (it != replicas_.end()) {
    // A close error does not matter: the data is about to be removed.
    Status st = it->second->Close();
    if (!st.ok())
      TLOG_WARN(kTag, "closing %s before delete: %s", volume_id.c_str(), st.ToString().c_str());
    replicas_.erase(it);
  }
  // Also reached for a replica that failed to load. Only <dir>/data is ever
  // removed, never a device or file named by data_path. meta goes first: once
  // it is gone the directory is no longer a replica, so a crash part-way
  // leaves a leftover that LoadAll skips and Create cleans up.
  const std::string dir = root_ + "/" + volume_id;
  TANDEM_RETURN_IF_ERROR(UnlinkIfPresent(dir + "/meta"));
  TANDEM_RETURN_IF_ERROR(UnlinkIfPresent(dir + "/data"));
  // A volume created with a data-port secret keeps it beside meta and data.
  TANDEM_RETURN_IF_ERROR(UnlinkIfPresent(dir + "/secret"));
  if (::rmdir(dir.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return PosixError("rmdir " + dir, errno);
  }
  TLOG_INFO(kTag, "deleted replica of volume %s", volume_id.c_str());
  return SyncDir(root_);
}

std::vector<std::shared_ptr<Replica>> ReplicaManager::List() const {
  MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Replica>> out;
  out.reserve(replicas_.size());
  for (const auto& [id, r] : replicas_) out.push_back(r);
  return out;
}

Status ReplicaManager::CloseAll() {
  MutexLock lock(&mu_);
  Status first;
  for (auto& [id, r] : replicas_) {
    Status st = r->Close();
    if (!st.ok()) {
      TLOG_ERROR(kTag, "closing replica of volume %s: %s", id.c_str(), st.ToString().c_str());
      if (first.ok()) first = st.WithContext(id);
    }
  }
  // Closed replicas have no fd; forget them so Get() cannot hand one out.
  replicas_.clear();
  return first;
}

}  // namespace tandem::replica

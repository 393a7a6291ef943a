// size: the replica's lifecycle and record updates (create/open/close, epoch, generation,
// resize) share the file helpers above; the dirty map and activity log are in replica_dirty.cc.
#include "replica-engine/replica/replica.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <random>

#include "common/bits.h"
#include "common/file_util.h"
#include "common/logging.h"

namespace tandem::replica {
namespace {

constexpr char kTag[] = "replica";
// A replica holds a tenant's data: only the engine's user may read it, even
// where the umask would allow more (docs/security.md).
constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;
constexpr size_t kMaxIdLength = 128;
constexpr size_t kMaxDataPathLength = 1024;

// A random non-zero 64-bit id (a new generation's). getrandom(2) never fails
// for 8 bytes once the pool is initialised; std::random_device backs it up.
uint64_t NewGenerationId() {
  uint64_t id = 0;
  while (id == 0) {
    if (::getrandom(&id, sizeof(id), 0) != static_cast<ssize_t>(sizeof(id))) {
      std::random_device rd;
      id = (uint64_t{rd()} << 32) | rd();
    }
  }
  return id;
}

// One bit per dirty region, a partial last region included.
size_t DirtyMapBytes(uint64_t size, uint32_t region) {
  uint64_t regions = size / region + (size % region != 0 ? 1 : 0);
  return static_cast<size_t>((regions + 7) / 8);
}

std::string MetaPath(const std::string& dir) { return dir + "/meta"; }
std::string DefaultDataPath(const std::string& dir) { return dir + "/data"; }
std::string SecretPath(const std::string& dir) { return dir + "/secret"; }

// <dir>/secret, or empty when there is none. Any other error fails the open:
// a replica whose secret cannot be read must not be served without one.
Status ReadSecret(const std::string& dir, std::string* out) {
  out->clear();
  const std::string path = SecretPath(dir);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? Status::Ok() : PosixError("open " + path, errno);
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  const int err = errno;
  ::close(fd);
  if (n < 0) return PosixError("read " + path, err);
  out->assign(buf, static_cast<size_t>(n));
  return Status::Ok();
}

bool Exists(const std::string& path) {
  struct stat sb;
  return ::lstat(path.c_str(), &sb) == 0;
}

Status ValidateConfig(const ReplicaConfig& c) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", c.volume_id));
  TANDEM_RETURN_IF_ERROR(ValidateId("replica_id", c.replica_id));
  if (!IsPowerOfTwo(c.block_size) || c.block_size < 512 || c.block_size > 65536) {
    return Status::InvalidArgument("block_size " + std::to_string(c.block_size) +
                                   " is not a power of two in [512, 65536]");
  }
  if (c.size == 0 || c.size % c.block_size != 0) {
    return Status::InvalidArgument("size " + std::to_string(c.size) +
                                   " is not a positive multiple of block_size " +
                                   std::to_string(c.block_size));
  }
  if (!IsPowerOfTwo(c.dirty_region_size) || c.dirty_region_size < c.block_size) {
    return Status::InvalidArgument("dirty_region_size " + std::to_string(c.dirty_region_size) +
                                   " is not a power of two >= block_size");
  }
  if (c.activity_extent_size != 0 &&
      (!IsPowerOfTwo(c.activity_extent_size) || c.activity_extent_size < c.block_size)) {
    return Status::InvalidArgument("activity_extent_size " +
                                   std::to_string(c.activity_extent_size) +
                                   " is not 0 or a power of two >= block_size");
  }
  if (c.data_path.size() > kMaxDataPathLength) {
    return Status::InvalidArgument("data_path is longer than 1024 bytes");
  }
  return Status::Ok();
}

// Capacity of an open data file or block device (st_size is 0 for devices).
Status DeviceSize(int fd, const std::string& path, uint64_t* out) {
  struct stat sb;
  if (::fstat(fd, &sb) != 0) return PosixError("fstat " + path, errno);
  if (S_ISBLK(sb.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) return PosixError("BLKGETSIZE64 " + path, errno);
    *out = bytes;
    return Status::Ok();
  }
  if (!S_ISREG(sb.st_mode)) {
    return Status::InvalidArgument(path + " is neither a regular file nor a block device");
  }
  *out = static_cast<uint64_t>(sb.st_size);
  return Status::Ok();
}

Status CheckCapacity(int fd, const std::string& path, uint64_t want) {
  uint64_t have = 0;
  TANDEM_RETURN_IF_ERROR(DeviceSize(fd, path, &have));
  if (have < want) {
    return Status::InvalidArgument("data_path " + path + " holds " + std::to_string(have) +
                                   " bytes, less than size " + std::to_string(want));
  }
  return Status::Ok();
}

// Tightens what an older engine (or the umask) left looser than kDirMode /
// kFileMode: the directory, the meta file and a data file of our own (never
// a device or file named by data_path, which the operator manages).
Status TightenModes(const std::string& dir, bool own_data) {
  std::string paths[3] = {dir, dir + "/meta", own_data ? dir + "/data" : std::string()};
  for (int i = 0; i < 3; ++i) {
    if (paths[i].empty()) continue;
    const mode_t want = i == 0 ? kDirMode : kFileMode;
    struct stat sb;
    if (::stat(paths[i].c_str(), &sb) != 0) return PosixError("stat " + paths[i], errno);
    if ((sb.st_mode & 07777 & ~want) == 0) continue;
    if (::chmod(paths[i].c_str(), sb.st_mode & want) != 0) {
      return PosixError("chmod " + paths[i], errno);
    }
    TLOG_INFO(kTag, "%s: mode %04o tightened to %04o", paths[i].c_str(),
              static_cast<unsigned>(sb.st_mode & 07777), static_cast<unsigned>(sb.st_mode & want));
  }
  return Status::Ok();
}

// The meta file opened a second time, through the backend (O_DIRECT), for
// asynchronous persists. -1 when that fails (e.g. a file system without
// O_DIRECT): the replica then persists synchronously only.
int OpenDirectMeta(backend::StorageBackend* backend, const std::string& path) {
  Result<int> fd = backend->OpenFile(path.c_str(), /*create=*/false);
  if (fd.ok()) return *fd;
  TLOG_WARN(kTag, "%s: no O_DIRECT handle (%s); dirty-map updates will be synchronous",
            path.c_str(), fd.status().ToString().c_str());
  return -1;
}

}  // namespace

Status ValidateId(const char* field, const std::string& id) {
  if (id.empty() || id.size() > kMaxIdLength) {
    return Status::InvalidArgument(std::string(field) + " must be 1 to 128 characters long");
  }
  if (id == "." || id == "..") {
    return Status::InvalidArgument(std::string(field) + " may not be \".\" or \"..\"");
  }
  for (char ch : id) {
    bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-';
    if (!ok) {
      return Status::InvalidArgument(std::string(field) +
                                     " may only contain characters from [A-Za-z0-9._-]");
    }
  }
  return Status::Ok();
}

Replica::Replica(backend::StorageBackend* backend, std::string dir, int fd,
                 std::unique_ptr<MetadataFile> meta, bool was_clean, int direct_meta_fd)
    : backend_(backend),
      dir_(std::move(dir)),
      volume_id_(meta->current().volume_id),
      fd_(fd),
      meta_(std::move(meta)),
      was_clean_(was_clean),
      direct_meta_fd_(direct_meta_fd) {
  InitActivity();
  const ReplicaMetadata& md = meta_->current();
  summary_.volume_id = md.volume_id;
  summary_.replica_id = md.replica_id;
  summary_.data_path = md.data_path;
  summary_.dir = dir_;
  summary_.block_size = md.block_size;
  summary_.dirty_region_size = md.dirty_region_size;
  summary_.was_clean = was_clean_;
  PublishSummary();
}

ReplicaSummary Replica::summary() const {
  MutexLock lock(&summary_mu_);
  return summary_;
}

void Replica::PublishSummary() {
  // Only the fields that change after creation; the strings are fixed.
  const ReplicaMetadata& md = meta_->current();
  MutexLock lock(&summary_mu_);
  summary_.size = md.size;
  summary_.generation = md.generation;
  summary_.generation_id = md.generation_id;
  summary_.highest_epoch = md.highest_epoch;
  summary_.epoch_owner = md.epoch_owner;
  summary_.tracking_dirty = md.tracking_dirty;
  summary_.dirty_since_generation = md.dirty_since_generation;
  summary_.rebuild_cursor = md.rebuild_cursor;
  summary_.rebuild_generation = md.rebuild_generation;
  summary_.closed = closed_;
}

void Replica::InitActivity() {
  const ReplicaMetadata& md = meta_->current();
  open_generation_ = md.generation;
  if (md.activity_extent_size == 0) return;
  const uint64_t extents = (md.size + md.activity_extent_size - 1) / md.activity_extent_size;
  al_inflight_.assign(extents, 0);
  al_quiesced_.assign(extents, 0);
  // Whatever the log holds now was set by an earlier run: sticky.
  al_sticky_ = md.activity_map;
  any_sticky_ = std::any_of(al_sticky_.begin(), al_sticky_.end(), [](uint8_t b) { return b != 0; });
}

Replica::~Replica() {
  if (!closed_ && fd_ >= 0) backend_->CloseFile(fd_);
  if (direct_meta_fd_ >= 0) backend_->CloseFile(direct_meta_fd_);
}

// size: one create sequence (validate, files, capacity, record, secret) whose every step
// must undo the ones before it on failure; split, the undo would be spread out.
Result<std::unique_ptr<Replica>> Replica::Create(backend::StorageBackend* backend,
                                                 const std::string& dir,
                                                 const ReplicaConfig& config) {
  TANDEM_RETURN_IF_ERROR(ValidateConfig(config));
  const std::string meta_path = MetaPath(dir);
  const bool own_data = config.data_path.empty();
  const std::string data_path = own_data ? DefaultDataPath(dir) : config.data_path;

  bool made_dir = false;
  if (::mkdir(dir.c_str(), kDirMode) == 0) {
    made_dir = true;
    TANDEM_RETURN_IF_ERROR(SyncDir(DirName(dir)));
  } else if (errno != EEXIST) {
    return PosixError("mkdir " + dir, errno);
  } else if (Exists(meta_path)) {
    return Status::AlreadyExists("a replica already exists in " + dir);
  } else if (::unlink(SecretPath(dir).c_str()) != 0 && errno != ENOENT) {
    // A secret left by an interrupted create must not guard the new replica.
    return PosixError("unlink " + SecretPath(dir), errno);
  } else if (own_data && Exists(data_path)) {
    // The meta file is written last, so a directory with data but no meta is
    // what an interrupted Create leaves behind; its contents are not a replica.
    TLOG_WARN(kTag, "%s: removing leftover of an interrupted create", data_path.c_str());
    if (::unlink(data_path.c_str()) != 0) return PosixError("unlink " + data_path, errno);
  }

  int fd = -1;
  bool made_data = false;
  bool made_secret = false;
  // Undoes whatever this call created, newest first, so a failed Create leaves
  // the directory as it found it.
  auto rollback = [&](const Status& st) -> Status {
    if (fd >= 0) backend->CloseFile(fd);
    if (made_secret) ::unlink(SecretPath(dir).c_str());
    if (made_data) ::unlink(data_path.c_str());
    if (made_dir) ::rmdir(dir.c_str());
    return st;
  };

  Result<int> opened = backend->OpenFile(data_path.c_str(), /*create=*/own_data);
  if (!opened.ok()) return rollback(opened.status().WithContext("open " + data_path));
  fd = *opened;
  made_data = own_data;
  if (own_data) {
    // ftruncate allocates nothing: the data file starts sparse and reads as
    // zeroes. fsync makes its size durable before the meta file refers to it.
    if (::ftruncate(fd, static_cast<off_t>(config.size)) != 0) {
      return rollback(PosixError("ftruncate " + data_path, errno));
    }
    if (::fsync(fd) != 0) return rollback(PosixError("fsync " + data_path, errno));
  } else {
    Status st = CheckCapacity(fd, data_path, config.size);
    if (!st.ok()) return rollback(st);
  }

  ReplicaMetadata md;
  md.volume_id = config.volume_id;
  md.replica_id = config.replica_id;
  md.data_path = config.data_path;  // empty: <dir>/data, so the root can be moved
  md.size = config.size;
  md.block_size = config.block_size;
  md.dirty_region_size = config.dirty_region_size;
  md.dirty_map.assign(DirtyMapBytes(config.size, config.dirty_region_size), 0);
  if (config.activity_extent_size != 0) {
    md.activity_extent_size = std::max(config.activity_extent_size, config.dirty_region_size);
    md.activity_map.assign(DirtyMapBytes(config.size, md.activity_extent_size), 0);
  }
  md.clean_shutdown = false;  // open from now until Close()
  if (!config.secret.empty()) {
    made_secret = true;
    Status st = WriteFileAtomically(SecretPath(dir), config.secret, 0600);
    if (!st.ok()) return rollback(st);
  }
  // MetadataFile::Create fsyncs `dir`, which also persists the data entry.
  Result<std::unique_ptr<MetadataFile>> meta = MetadataFile::Create(meta_path, md);
  if (!meta.ok()) return rollback(meta.status());
  // A directory that existed already (left by an interrupted create, or made
  // by hand) gets the same modes as one made here.
  if (Status st = TightenModes(dir, own_data); !st.ok()) {
    meta->reset();
    ::unlink(meta_path.c_str());
    return rollback(st);
  }
  TLOG_INFO(kTag, "created replica %s/%s in %s (%" PRIu64 " bytes, data %s)",
            config.volume_id.c_str(), config.replica_id.c_str(), dir.c_str(), config.size,
            data_path.c_str());
  // A new replica's data is all zeroes on every peer: nothing to resync.
  const int direct_meta = OpenDirectMeta(backend, meta_path);
  std::unique_ptr<Replica> r(
      new Replica(backend, dir, fd, std::move(*meta), /*was_clean=*/true, direct_meta));
  r->secret_ = config.secret;
  return r;
}

Result<std::unique_ptr<Replica>> Replica::Open(backend::StorageBackend* backend,
                                               const std::string& dir) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<MetadataFile> meta, MetadataFile::Open(MetaPath(dir)));
  ReplicaMetadata md = meta->current();
  TANDEM_RETURN_IF_ERROR(TightenModes(dir, md.data_path.empty()));
  const std::string data_path = md.data_path.empty() ? DefaultDataPath(dir) : md.data_path;
  std::string secret;
  TANDEM_RETURN_IF_ERROR(ReadSecret(dir, &secret));
  TANDEM_ASSIGN_OR_RETURN(int fd, backend->OpenFile(data_path.c_str(), /*create=*/false));
  Status st = CheckCapacity(fd, data_path, md.size);
  const bool was_clean = md.clean_shutdown;
  if (st.ok()) {
    // Written even when already false: it also rewrites the other slot, so a
    // slot found damaged at Open is repaired at once.
    md.clean_shutdown = false;
    st = meta->Update(md);
  }
  if (!st.ok()) {
    backend->CloseFile(fd);
    return st.WithContext(dir);
  }
  if (!was_clean) {
    TLOG_WARN(kTag, "replica %s in %s was not shut down cleanly", md.volume_id.c_str(),
              dir.c_str());
  }
  const int direct_meta = OpenDirectMeta(backend, MetaPath(dir));
  std::unique_ptr<Replica> r(
      new Replica(backend, dir, fd, std::move(meta), was_clean, direct_meta));
  r->secret_ = std::move(secret);
  return r;
}

Status Replica::Close() {
  if (closed_) return Status::Ok();
  if (persist_in_flight_) {
    return Status::FailedPrecondition("replica " + dir_ + ": metadata write still in flight");
  }
  closed_ = true;
  if (direct_meta_fd_ >= 0) {
    backend_->CloseFile(direct_meta_fd_);
    direct_meta_fd_ = -1;
  }
  // Data first: clean_shutdown = true promises every acknowledged write is on
  // disk, so it may only be written after the flush succeeded.
  Status st;
  if (::fdatasync(fd_) != 0) st = PosixError("fdatasync data of " + dir_, errno);
  if (st.ok()) {
    ReplicaMetadata md = meta_->current();
    md.clean_shutdown = true;
    // The activity log is kept: every write is on *this* disk now, but a
    // write a target had in flight may have reached this replica and not its
    // peers (they may be shutting down at the same moment). Only a target
    // knows; the next attach resyncs these extents and its generation bump
    // retires them (found at Open, they are sticky).
    st = UpdateMetadata(md);
  }
  backend_->CloseFile(fd_);
  fd_ = -1;
  PublishSummary();
  return st;
}

Status Replica::CheckCanUpdate() const {
  if (closed_) return Status::FailedPrecondition("replica " + dir_ + " is closed");
  if (persist_in_flight_) {
    return Status::Unavailable("replica " + dir_ + ": a metadata write is in flight");
  }
  return Status::Ok();
}

Status Replica::UpdateMetadata(const ReplicaMetadata& md) {
  TANDEM_RETURN_IF_ERROR(meta_->Update(md));
  // md was copied from current(), so it carried every in-memory dirty bit.
  NoteRecordDurable();
  return Status::Ok();
}

Status Replica::SyncRecord() {
  TANDEM_RETURN_IF_ERROR(meta_->Sync());
  NoteRecordDurable();
  return Status::Ok();
}

void Replica::NoteRecordDurable() {
  dirty_unsynced_ = false;
  durable_seq_ = change_seq_;
  clear_durable_ = clear_seq_;
  PublishSummary();
}

Status Replica::SetHighestEpoch(uint64_t epoch, uint64_t owner) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  const ReplicaMetadata& cur = meta_->current();
  if (cur.highest_epoch == epoch && cur.epoch_owner == owner) return Status::Ok();
  // In place, not a copy: the record holds the maps.
  ReplicaMetadata* md = meta_->mutable_current();
  const uint64_t old_epoch = md->highest_epoch;
  const uint64_t old_owner = md->epoch_owner;
  md->highest_epoch = epoch;
  md->epoch_owner = owner;
  Status st = SyncRecord();
  if (!st.ok()) {
    md->highest_epoch = old_epoch;
    md->epoch_owner = old_owner;
  }
  return st;
}

Status Replica::SetGeneration(uint64_t generation, bool track_dirty, uint64_t generation_id,
                              const std::vector<uint64_t>& history) {
  if (generation_id == 0) return Status::InvalidArgument("generation id 0");
  if (history.size() > kMaxGenerationHistory) {
    return Status::InvalidArgument(std::to_string(history.size()) +
                                   " generation history ids exceed " +
                                   std::to_string(kMaxGenerationHistory));
  }
  for (uint64_t id : history) {
    if (id == 0) return Status::InvalidArgument("a generation history id is 0");
  }
  return ApplyGeneration(generation, track_dirty, generation_id, history);
}

Status Replica::SetGeneration(uint64_t generation, bool track_dirty) {
  const ReplicaMetadata& cur = meta_->current();
  if (generation <= cur.generation) {
    // Same number (or refused below): the id stays.
    return ApplyGeneration(generation, track_dirty, cur.generation_id, cur.generation_history);
  }
  std::vector<uint64_t> history = cur.generation_history;
  if (cur.generation_id != 0) {
    history.insert(history.begin(), cur.generation_id);
    if (history.size() > kMaxGenerationHistory) history.resize(kMaxGenerationHistory);
  }
  return ApplyGeneration(generation, track_dirty, NewGenerationId(), std::move(history));
}

Status Replica::ApplyGeneration(uint64_t generation, bool track_dirty, uint64_t generation_id,
                                std::vector<uint64_t> history) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  const ReplicaMetadata& cur = meta_->current();
  if (generation < cur.generation) {
    return Status::FailedPrecondition("generation " + std::to_string(generation) +
                                      " is lower than the current " +
                                      std::to_string(cur.generation));
  }
  if (track_dirty && cur.dirty_region_size == 0) {
    return Status::InvalidArgument("replica " + dir_ + " has no dirty map to track into");
  }
  if (cur.generation == generation && cur.tracking_dirty == track_dirty &&
      cur.generation_id == generation_id && cur.generation_history == history) {
    return Status::Ok();
  }
  // In place, not a copy: the record holds the dirty map.
  ReplicaMetadata* md = meta_->mutable_current();
  const uint64_t old_generation = md->generation;
  const bool old_tracking = md->tracking_dirty;
  const uint64_t old_since = md->dirty_since_generation;
  const uint64_t old_id = md->generation_id;
  std::vector<uint64_t> old_history = std::move(md->generation_history);
  md->generation = generation;
  md->tracking_dirty = track_dirty;
  md->generation_id = generation_id;
  md->generation_history = std::move(history);
  // The map covers every write since tracking was turned on; while it stays
  // on that point does not move, however often the generation is bumped.
  if (!track_dirty) {
    md->dirty_since_generation = 0;
  } else if (!old_tracking) {
    md->dirty_since_generation = generation;
  }
  Status st = SyncRecord();
  if (!st.ok()) {
    // Undo: the server must not believe a generation or tracking state the
    // disk does not have (a write could then skip its dirty mark).
    md->generation = old_generation;
    md->tracking_dirty = old_tracking;
    md->dirty_since_generation = old_since;
    md->generation_id = old_id;
    md->generation_history = std::move(old_history);
    return st;
  }
  // The target moves a replica past its generation only once it holds the
  // current data (after an attach's resync, at the end of its rebuild): the
  // extents an earlier run left in the activity log retire like any other.
  if (any_sticky_ && generation > open_generation_) {
    std::fill(al_sticky_.begin(), al_sticky_.end(), 0);
    any_sticky_ = false;
  }
  return Status::Ok();
}

Status Replica::Resize(uint64_t new_size) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  const ReplicaMetadata& cur = meta_->current();
  if (new_size == 0 || new_size % cur.block_size != 0) {
    return Status::InvalidArgument("size " + std::to_string(new_size) +
                                   " is not a positive multiple of block_size " +
                                   std::to_string(cur.block_size));
  }
  if (new_size < cur.size) {
    return Status::OutOfRange("size " + std::to_string(new_size) +
                              " is smaller than the replica's " + std::to_string(cur.size) +
                              " bytes: a replica never shrinks");
  }
  if (new_size == cur.size) return Status::Ok();
  // Data first: the record may only name a size the data already has.
  const std::string data_path = cur.data_path.empty() ? DefaultDataPath(dir_) : cur.data_path;
  if (cur.data_path.empty()) {
    if (::ftruncate(fd_, static_cast<off_t>(new_size)) != 0) {
      return PosixError("ftruncate " + data_path, errno);
    }
    if (::fsync(fd_) != 0) return PosixError("fsync " + data_path, errno);
  } else if (Status st = CheckCapacity(fd_, data_path, new_size); !st.ok()) {
    return Status::OutOfRange(st.message());
  }
  ReplicaMetadata md = cur;  // a copy of the maps, once per expansion
  md.size = new_size;
  // New regions and extents start clean: every replica's grown space reads
  // as zeroes.
  if (md.dirty_region_size != 0) {
    md.dirty_map.resize(DirtyMapBytes(new_size, md.dirty_region_size), 0);
  }
  if (md.activity_extent_size != 0) {
    md.activity_map.resize(DirtyMapBytes(new_size, md.activity_extent_size), 0);
  }
  TANDEM_RETURN_IF_ERROR(meta_->Replace(md));
  NoteRecordDurable();  // it carried every in-memory bit
  if (md.activity_extent_size != 0) {
    const uint64_t extents = (new_size + md.activity_extent_size - 1) / md.activity_extent_size;
    al_inflight_.resize(extents, 0);
    al_quiesced_.resize(extents, 0);
    al_sticky_.resize(md.activity_map.size(), 0);
  }
  // The O_DIRECT handle and the slot buffer belong to the replaced file.
  if (direct_meta_fd_ >= 0) backend_->CloseFile(direct_meta_fd_);
  direct_meta_fd_ = OpenDirectMeta(backend_, MetaPath(dir_));
  persist_buf_.reset();
  TLOG_INFO(kTag, "replica %s grown to %" PRIu64 " bytes", dir_.c_str(), new_size);
  return Status::Ok();
}

Status Replica::FindAllocated(uint64_t offset, uint64_t length, DataExtent* out, uint32_t max,
                              uint32_t* count, uint64_t* covered_end) const {
  *count = 0;
  *covered_end = offset + length;
  if (closed_) return Status::FailedPrecondition("replica " + dir_ + " is closed");
  const uint64_t end = offset + length;
  const uint64_t block = meta_->current().block_size;
  struct stat sb;
  if (::fstat(fd_, &sb) != 0) return PosixError("fstat data of " + dir_, errno);
  auto whole = [&] {
    out[0] = DataExtent{offset, length};
    *count = 1;
    return Status::Ok();
  };
  if (!S_ISREG(sb.st_mode)) return whole();  // a device has no holes to find

  // Appends [b, e) rounded out to blocks and clipped to the range, merging it
  // into the previous extent when they touch. False when `out` is full.
  auto add = [&](uint64_t b, uint64_t e) {
    b = std::max(offset, b / block * block);
    e = std::min(end, (e + block - 1) / block * block);
    if (*count > 0 && out[*count - 1].offset + out[*count - 1].length >= b) {
      DataExtent& last = out[*count - 1];
      last.length = std::max(last.offset + last.length, e) - last.offset;
      return true;
    }
    if (*count == max) return false;
    out[(*count)++] = DataExtent{b, e - b};
    return true;
  };
  uint64_t pos = offset;
  while (pos < end) {
    off_t data = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data at or after pos
      if (errno == EINVAL || errno == EOPNOTSUPP) {
        *count = 0;
        return whole();  // no SEEK_DATA here: everything may be data
      }
      return PosixError("lseek SEEK_DATA in data of " + dir_, errno);
    }
    if (static_cast<uint64_t>(data) >= end) break;
    off_t hole = ::lseek(fd_, data, SEEK_HOLE);
    if (hole < 0) return PosixError("lseek SEEK_HOLE in data of " + dir_, errno);
    if (!add(static_cast<uint64_t>(data), static_cast<uint64_t>(hole))) {
      // Full, and more data follows: the list covers up to the last extent.
      *covered_end = out[*count - 1].offset + out[*count - 1].length;
      return Status::Ok();
    }
    pos = static_cast<uint64_t>(hole);
  }
  return Status::Ok();
}

Status Replica::SetRebuildCursor(uint64_t cursor, uint64_t generation) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  const ReplicaMetadata& cur = meta_->current();
  if (cursor > cur.size) {
    return Status::OutOfRange("rebuild cursor " + std::to_string(cursor) +
                              " is beyond the replica size " + std::to_string(cur.size));
  }
  if (cursor == 0) generation = 0;  // cleared: nothing to remember it by
  if (cur.rebuild_cursor == cursor && cur.rebuild_generation == generation) return Status::Ok();
  ReplicaMetadata* md = meta_->mutable_current();
  const uint64_t old_cursor = md->rebuild_cursor;
  const uint64_t old_generation = md->rebuild_generation;
  md->rebuild_cursor = cursor;
  md->rebuild_generation = generation;
  Status st = SyncRecord();
  if (!st.ok()) {
    // Undo: GET_INFO must not report a checkpoint the disk does not have.
    md->rebuild_cursor = old_cursor;
    md->rebuild_generation = old_generation;
    return st;
  }
  return Status::Ok();
}

}  // namespace tandem::replica

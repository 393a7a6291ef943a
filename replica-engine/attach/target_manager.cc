#include "replica-engine/attach/target_manager.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>
#include <tuple>

#include "common/logging.h"
#include "replica-engine/frontend/export_factory.h"

namespace tandem::attach {

using target::ReplicaEndpoint;
using target::TargetState;
using target::VolumeTarget;

namespace {
constexpr const char* kTag = "target_manager";

// Runs `fn` on the loop thread and waits for it. REQUIRES: not on the loop thread.
template <typename T>
T RunOnLoop(EventLoop* loop, std::function<T()> fn) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<T> result;
  loop->Post([&] {
    std::optional<T> r(fn());
    std::lock_guard<std::mutex> l(mu);
    result = std::move(r);
    done = true;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });
  return std::move(*result);
}

std::string AddressOf(const ReplicaEndpoint& e) { return e.host + ":" + std::to_string(e.port); }

// The same set of endpoints, in any order: after AddReplica/RemoveReplica the
// caller's list and ours may be ordered differently.
bool SameEndpoints(std::vector<ReplicaEndpoint> a, std::vector<ReplicaEndpoint> b) {
  if (a.size() != b.size()) return false;
  auto less = [](const ReplicaEndpoint& x, const ReplicaEndpoint& y) {
    return std::tie(x.host, x.port, x.local) < std::tie(y.host, y.port, y.local);
  };
  std::sort(a.begin(), a.end(), less);
  std::sort(b.begin(), b.end(), less);
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].host != b[i].host || a[i].port != b[i].port || a[i].local != b[i].local) return false;
  }
  return true;
}

bool SameSpec(const TargetSpec& a, const TargetSpec& b) {
  return a.options.epoch == b.options.epoch && a.options.token == b.options.token &&
         (a.options.size == b.options.size || b.options.size == 0) &&
         SameEndpoints(a.options.replicas, b.options.replicas) && a.export_kind == b.export_kind &&
         a.nbd_tcp_address == b.nbd_tcp_address;
}

// The port of "host:port"; 0 when there is none.
uint16_t PortOf(const std::string& address) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return 0;
  unsigned long port = std::strtoul(address.c_str() + colon + 1, nullptr, 10);
  return port <= 65535 ? static_cast<uint16_t>(port) : 0;
}
}  // namespace

// Marks a volume whose Create/Destroy is running (released on return).
class TargetManager::VolumeGuard {
 public:
  VolumeGuard(TargetManager* m, const std::string& volume_id) : m_(m), volume_id_(volume_id) {
    std::lock_guard<std::mutex> l(m_->mu_);
    held_ = m_->busy_.insert(volume_id_).second;
  }
  ~VolumeGuard() {
    if (!held_) return;
    std::lock_guard<std::mutex> l(m_->mu_);
    m_->busy_.erase(volume_id_);
  }
  VolumeGuard(const VolumeGuard&) = delete;
  VolumeGuard& operator=(const VolumeGuard&) = delete;
  Status status() const {
    return held_ ? Status::Ok()
                 : Status::Aborted("another create/destroy of volume '" + volume_id_ +
                                   "' is in progress; retry");
  }

 private:
  TargetManager* m_;
  std::string volume_id_;
  bool held_ = false;
};

// A volume attached on this node: its target and the export of it, on loop
// `index` (`loop`).
struct TargetManager::Entry {
  TargetSpec spec;
  size_t index = 0;
  EventLoop* loop = nullptr;
  std::unique_ptr<VolumeTarget> target;
  std::unique_ptr<frontend::Export> exp;
};

TargetManager::TargetManager(std::string export_dir, EventLoop* loop, size_t loop_count)
    : export_dir_(std::move(export_dir)),
      loops_(loop, loop_count),
      authorities_(loops_.size(), nullptr),
      targets_(loops_.size()) {}

// Shutdown destroys the targets on their loops; loops_ (declared before
// targets_) then stops and joins the threads of our own.
TargetManager::~TargetManager() { Shutdown(); }

Status TargetManager::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (started_) return Status::Ok();
  std::error_code ec;
  std::filesystem::create_directories(export_dir_, ec);
  if (ec) return Status::Internal("creating export directory " + export_dir_ + ": " + ec.message());
  TANDEM_RETURN_IF_ERROR(loops_.Start());
  started_ = true;
  return Status::Ok();
}

void TargetManager::set_authority(size_t index, target::MembershipAuthority* authority) {
  std::lock_guard<std::mutex> l(mu_);
  if (index < authorities_.size()) authorities_[index] = authority;
}

std::optional<size_t> TargetManager::PlacementOf(const std::string& volume_id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = placement_.find(volume_id);
  if (it == placement_.end()) return std::nullopt;
  return it->second;
}

TargetInfo TargetManager::InfoOf(const Entry& e) const {
  TargetInfo info;
  info.volume_id = e.spec.options.volume_id;
  if (e.exp) info.export_description = e.exp->Describe();
  if (info.export_description.kind == frontend::ExportKind::kNbd) {
    info.nbd_socket = info.export_description.path;
    info.nbd_tcp_port = PortOf(info.export_description.address);
  }
  info.epoch = e.spec.options.epoch;
  info.loop_index = e.index;
  info.status = e.target->GetStatus();
  return info;
}

uint64_t TargetIdFor(uint64_t identity, const std::string& volume_id, uint64_t epoch) {
  // FNV-1a over the volume id, then splitmix64 finalisers to mix in the
  // identity and the epoch: stable across builds and platforms (std::hash is
  // not promised to be), and no key is needed since ids are not secrets.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : volume_id) h = (h ^ ch) * 0x100000001b3ull;
  uint64_t id = mix(identity ^ mix(h ^ mix(epoch)));
  return id != 0 ? id : 1;
}

Result<TargetInfo> TargetManager::Create(const TargetSpec& spec) {
  if (!started_) return Status::FailedPrecondition("target manager not started");
  const std::string& vol = spec.options.volume_id;
  if (vol.empty() || vol.find('/') != std::string::npos || vol == "." || vol == "..") {
    return Status::InvalidArgument("volume_id: '" + vol + "' is not a valid volume id");
  }
  VolumeGuard guard(this, vol);
  TANDEM_RETURN_IF_ERROR(guard.status());
  Result<TargetInfo> existing = Existing(spec);
  if (existing.ok() || existing.status().code() != StatusCode::kNotFound) return existing;

  const size_t index = loops_.Acquire();
  std::unique_ptr<Entry> entry = NewEntry(spec, index);
  Entry* e = entry.get();
  Status st = StartTarget(e);
  if (st.ok()) st = StartExport(e);
  if (!st.ok()) {
    DestroyEntry(std::move(entry));
    loops_.Release(index);
    return st;
  }
  TargetInfo info = RunOnLoop<TargetInfo>(e->loop, [&] {
    TargetInfo i = InfoOf(*e);
    targets_[index][vol] = std::move(entry);
    return i;
  });
  {
    std::lock_guard<std::mutex> l(mu_);
    placement_[vol] = index;
  }
  TLOG_INFO(kTag, "volume '%s' attached at epoch %llu on target loop %zu, %s export %s",
            vol.c_str(), static_cast<unsigned long long>(spec.options.epoch), index,
            frontend::ExportKindName(spec.export_kind), info.export_description.path.c_str());
  return info;
}

// The same request is answered again wherever its target runs, another is
// refused; NOT_FOUND: the volume has no target here.
Result<TargetInfo> TargetManager::Existing(const TargetSpec& spec) {
  const std::string& vol = spec.options.volume_id;
  std::optional<size_t> index = PlacementOf(vol);
  if (!index) return Status::NotFound("");
  return RunOnLoop<Result<TargetInfo>>(loops_.loop(*index), [&]() -> Result<TargetInfo> {
    auto it = targets_[*index].find(vol);
    if (it == targets_[*index].end()) return Status::NotFound("");
    if (!SameSpec(it->second->spec, spec)) {
      return Status::AlreadyExists("volume '" + vol + "' is attached here with epoch " +
                                   std::to_string(it->second->spec.options.epoch) +
                                   " and another spec");
    }
    return InfoOf(*it->second);
  });
}

// The spec with the manager's defaults for what it leaves open: loop
// `index`'s authority, the channel factory, the target id.
std::unique_ptr<TargetManager::Entry> TargetManager::NewEntry(const TargetSpec& spec,
                                                              size_t index) {
  auto entry = std::make_unique<Entry>();
  entry->spec = spec;
  entry->index = index;
  entry->loop = loops_.loop(index);
  target::TargetOptions& o = entry->spec.options;
  if (o.authority == nullptr) {
    std::lock_guard<std::mutex> l(mu_);
    o.authority = authorities_[index];
  }
  if (!o.channel_factory) o.channel_factory = channel_factory_;
  if (o.target_id == 0 && identity_.load() != 0) {
    o.target_id = TargetIdFor(identity_.load(), o.volume_id, o.epoch);
  }
  return entry;
}

// Starts the target and waits, off the loop and holding no lock, until it
// knows its replicas. UNAVAILABLE (FAILED_PRECONDITION when fenced) naming
// every replica's state when it does not serve in time.
Status TargetManager::StartTarget(Entry* e) {
  const TargetSpec& spec = e->spec;
  const std::string& vol = spec.options.volume_id;
  Status st = RunOnLoop<Status>(e->loop, [&] {
    e->target = std::make_unique<VolumeTarget>(e->loop, spec.options);
    Status started = e->target->Start();
    // A target that did not start has nothing to shut down.
    if (!started.ok()) e->target.reset();
    return started;
  });
  if (!st.ok()) return st;
  auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(spec.ready_timeout_ms == 0 ? 10000 : spec.ready_timeout_ms);
  TargetState state = TargetState::kStarting;
  while (true) {
    state = RunOnLoop<TargetState>(e->loop, [&] { return e->target->state(); });
    if (state != TargetState::kStarting || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (state == TargetState::kReady || state == TargetState::kDegraded) return Status::Ok();
  target::TargetStatus ts =
      RunOnLoop<target::TargetStatus>(e->loop, [&] { return e->target->GetStatus(); });
  std::string why;
  for (const target::ReplicaStatus& r : ts.replicas) {
    why += " " + r.address + "=" + target::ReplicaStateName(r.state);
    if (!r.last_error.empty()) why += " (" + r.last_error + ")";
  }
  if (state == TargetState::kFenced) {
    return Status::FailedPrecondition("volume '" + vol + "': a newer epoch owns it;" + why);
  }
  return Status::Unavailable("volume '" + vol + "': not serving (" +
                             target::TargetStateName(state) +
                             (ts.last_error.empty() ? "" : ": " + ts.last_error) + "):" + why);
}

Status TargetManager::StartExport(Entry* e) {
  const std::string& vol = e->spec.options.volume_id;
  frontend::ExportSpec es;
  es.kind = e->spec.export_kind;
  es.name = vol;
  if (es.kind == frontend::ExportKind::kNbd) {
    es.nbd_unix_path = export_dir_ + "/" + vol + ".sock";
    es.nbd_tcp_address = e->spec.nbd_tcp_address;
    es.nbd_write_spin_us = nbd_write_spin_us_;
  } else {
    es.fuse_mount_dir = export_dir_ + "/" + vol + ".fuse";
  }
  const char* kind = es.kind == frontend::ExportKind::kNbd ? "NBD" : "FUSE file";
  const std::string what = std::string(kind) + " export of volume '" + vol + "'";
  Result<std::unique_ptr<frontend::Export>> exp =
      frontend::CreateExport(e->loop, e->target.get(), es);
  if (!exp.ok()) return exp.status().WithContext(what);
  // The blocking half (resolving the NBD TCP address, the FUSE mount) here,
  // on the caller's thread: the loop may be the replica server's, shared by
  // every volume's replica I/O. The volume's guard keeps its size still.
  Status st = (*exp)->Prepare();
  if (st.ok()) {
    st = RunOnLoop<Status>(e->loop, [&] {
      Status started = (*exp)->Start();
      if (started.ok()) e->exp = std::move(*exp);
      return started;
    });
  }
  // Never started: undone here, off the loop too (a FUSE unmount).
  exp->reset();
  return st.WithContext(what);
}

// Shuts the export down (in-flight requests finish), then the target (final
// flush, replica connections closed), then frees both on the loop.
void TargetManager::DestroyEntry(std::unique_ptr<Entry> entry) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    static void Done(void* arg) {
      auto* w = static_cast<Wait*>(arg);
      std::lock_guard<std::mutex> l(w->mu);
      w->done = true;
      w->cv.notify_one();
    }
    void Await() {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return done; });
      done = false;
    }
  } wait;
  Entry* e = entry.get();
  if (e->exp) {
    e->loop->Post([&] { e->exp->Shutdown(&Wait::Done, &wait); });
    wait.Await();
  }
  if (e->target) {
    e->loop->Post([&] { e->target->Shutdown(&Wait::Done, &wait); });
    wait.Await();
  }
  RunOnLoop<bool>(e->loop, [&] {
    entry.reset();
    return true;
  });
}

Status TargetManager::Destroy(const std::string& volume_id) {
  if (!started_) return Status::Ok();
  VolumeGuard guard(this, volume_id);
  TANDEM_RETURN_IF_ERROR(guard.status());
  std::optional<size_t> index = PlacementOf(volume_id);
  if (!index) return Status::Ok();
  std::unique_ptr<Entry> entry = RunOnLoop<std::unique_ptr<Entry>>(loops_.loop(*index), [&] {
    std::unique_ptr<Entry> out;
    auto it = targets_[*index].find(volume_id);
    if (it != targets_[*index].end()) {
      out = std::move(it->second);
      targets_[*index].erase(it);
    }
    return out;
  });
  if (entry) DestroyEntry(std::move(entry));
  {
    std::lock_guard<std::mutex> l(mu_);
    placement_.erase(volume_id);
  }
  loops_.Release(*index);
  TLOG_INFO(kTag, "volume '%s' detached", volume_id.c_str());
  return Status::Ok();
}

Result<TargetInfo> TargetManager::Get(const std::string& volume_id) {
  Result<TargetInfo> info = Status::NotFound("no target for volume '" + volume_id + "'");
  (void)WithEntry(volume_id, [&](Entry* e) {
    info = InfoOf(*e);
    return Status::Ok();
  });
  return info;
}

std::vector<TargetInfo> TargetManager::List() {
  if (!started_) return {};
  std::vector<TargetInfo> out;
  for (size_t i = 0; i < loops_.size(); ++i) {
    std::vector<TargetInfo> part = RunOnLoop<std::vector<TargetInfo>>(loops_.loop(i), [&] {
      std::vector<TargetInfo> v;
      for (const auto& [vol, e] : targets_[i]) v.push_back(InfoOf(*e));
      return v;
    });
    out.insert(out.end(), part.begin(), part.end());
  }
  std::sort(out.begin(), out.end(),
            [](const TargetInfo& a, const TargetInfo& b) { return a.volume_id < b.volume_id; });
  return out;
}

// The entry is looked up again on its loop: a Destroy running meanwhile takes
// it out of targets_[i] on that loop and frees it there, so an entry found on
// the loop stays valid while `fn` runs.
Status TargetManager::WithEntry(const std::string& volume_id,
                                const std::function<Status(Entry*)>& fn) {
  const Status not_found = Status::NotFound("no target for volume '" + volume_id + "'");
  if (!started_) return not_found;
  std::optional<size_t> index = PlacementOf(volume_id);
  if (!index) return not_found;
  return RunOnLoop<Status>(loops_.loop(*index), [&] {
    auto it = targets_[*index].find(volume_id);
    if (it == targets_[*index].end()) return not_found;
    return fn(it->second.get());
  });
}

Status TargetManager::AddReplica(const std::string& volume_id, const ReplicaEndpoint& endpoint) {
  return WithEntry(volume_id, [&](Entry* e) {
    std::vector<ReplicaEndpoint>& spec = e->spec.options.replicas;
    for (const ReplicaEndpoint& r : spec) {
      if (r.host == endpoint.host && r.port == endpoint.port && r.local == endpoint.local) {
        return Status::Ok();
      }
    }
    Status st = e->target->AddReplica(endpoint);
    // The spec follows the live set, so a CreateTarget repeating the current
    // list stays idempotent.
    if (st.ok()) spec.push_back(endpoint);
    TLOG_INFO(kTag, "volume '%s': add replica %s: %s", volume_id.c_str(),
              AddressOf(endpoint).c_str(), st.ToString().c_str());
    return st;
  });
}

Status TargetManager::RemoveReplica(const std::string& volume_id, const std::string& address) {
  return WithEntry(volume_id, [&](Entry* e) {
    std::vector<ReplicaEndpoint>& spec = e->spec.options.replicas;
    auto it = std::find_if(spec.begin(), spec.end(),
                           [&](const ReplicaEndpoint& r) { return AddressOf(r) == address; });
    if (it == spec.end()) return Status::Ok();
    Status st = e->target->RemoveReplica(address);
    if (st.ok() || st.code() == StatusCode::kNotFound) {
      spec.erase(it);
      st = Status::Ok();
    }
    TLOG_INFO(kTag, "volume '%s': remove replica %s: %s", volume_id.c_str(), address.c_str(),
              st.ToString().c_str());
    return st;
  });
}

Status TargetManager::RebuildReplica(const std::string& volume_id, const std::string& address) {
  return WithEntry(volume_id, [&](Entry* e) {
    Status st = e->target->RebuildReplica(address);
    TLOG_INFO(kTag, "volume '%s': rebuild replica %s: %s", volume_id.c_str(), address.c_str(),
              st.ToString().c_str());
    return st;
  });
}

Status TargetManager::Resize(const std::string& volume_id, uint64_t size_bytes) {
  // The guard keeps the entry (and its export) alive while SizeChanged runs
  // off the loop: invalidating the kernel's cached size may wait for FUSE
  // requests that are waiting for the loop.
  VolumeGuard guard(this, volume_id);
  TANDEM_RETURN_IF_ERROR(guard.status());
  frontend::Export* exp = nullptr;
  Status st = WithEntry(volume_id, [&](Entry* e) {
    Status resized = e->target->Resize(size_bytes);
    if (resized.ok()) {
      e->spec.options.size = size_bytes;
      exp = e->exp.get();
    }
    return resized;
  });
  if (st.ok() && exp != nullptr) exp->SizeChanged();
  return st;
}

Status TargetManager::SetRebuildRate(const std::string& volume_id, uint64_t bytes_per_sec) {
  return WithEntry(volume_id, [&](Entry* e) {
    e->target->SetRebuildRate(bytes_per_sec);
    e->spec.options.rebuild_rate_bytes_per_sec = bytes_per_sec;
    TLOG_INFO(kTag, "volume '%s': rebuild rate limit %llu bytes/s (0: unlimited)",
              volume_id.c_str(), static_cast<unsigned long long>(bytes_per_sec));
    return Status::Ok();
  });
}

void TargetManager::Shutdown() {
  if (!started_) return;
  for (size_t i = 0; i < loops_.size(); ++i) {
    if (loops_.loop(i)->stopped()) {
      DropTargetsOfStoppedLoop(i);
      continue;
    }
    std::vector<std::string> vols = RunOnLoop<std::vector<std::string>>(loops_.loop(i), [&] {
      std::vector<std::string> v;
      for (const auto& [vol, e] : targets_[i]) v.push_back(vol);
      return v;
    });
    for (const std::string& v : vols) (void)Destroy(v);
  }
}

// A given loop stopped under its targets (its owner broke the order): nothing
// runs them any more, so waiting for the loop would hang. Destroy them here;
// their sockets and exports close with them.
void TargetManager::DropTargetsOfStoppedLoop(size_t index) {
  EntryMap& map = targets_[index];
  if (map.empty()) return;
  TLOG_ERROR(kTag, "target loop %zu stopped before its targets; destroying %zu off it", index,
             map.size());
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [vol, e] : map) placement_.erase(vol);
  }
  for (size_t n = map.size(); n > 0; --n) loops_.Release(index);
  map.clear();
}

}  // namespace tandem::attach

#include "replica-engine/attach/target_manager.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
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

// A volume attached on this node: its target and the export of it.
struct TargetManager::Entry {
  TargetSpec spec;
  std::unique_ptr<VolumeTarget> target;
  std::unique_ptr<frontend::Export> exp;
};

TargetManager::TargetManager(std::string export_dir, EventLoop* loop)
    : export_dir_(std::move(export_dir)),
      own_loop_(loop == nullptr ? std::make_unique<EventLoop>() : nullptr),
      loop_(loop == nullptr ? own_loop_.get() : loop) {}

TargetManager::~TargetManager() {
  Shutdown();
  if (thread_.joinable()) {
    loop_->Stop();
    thread_.join();
  }
}

Status TargetManager::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (started_) return Status::Ok();
  if (!loop_->init_status().ok()) return loop_->init_status();
  std::error_code ec;
  std::filesystem::create_directories(export_dir_, ec);
  if (ec) return Status::Internal("creating export directory " + export_dir_ + ": " + ec.message());
  if (own_loop_) thread_ = std::thread([this] { own_loop_->Run(); });
  started_ = true;
  return Status::Ok();
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
  // Existing target: the same request is answered again, another is refused.
  Result<TargetInfo> existing = RunOnLoop<Result<TargetInfo>>(loop_, [&]() -> Result<TargetInfo> {
    auto it = targets_.find(vol);
    if (it == targets_.end()) return Status::NotFound("");
    if (!SameSpec(it->second->spec, spec)) {
      return Status::AlreadyExists("volume '" + vol + "' is attached here with epoch " +
                                   std::to_string(it->second->spec.options.epoch) +
                                   " and another spec");
    }
    return InfoOf(*it->second);
  });
  if (existing.ok() || existing.status().code() != StatusCode::kNotFound) return existing;

  auto entry = std::make_unique<Entry>();
  entry->spec = spec;
  if (entry->spec.options.authority == nullptr) entry->spec.options.authority = authority_.load();
  if (!entry->spec.options.channel_factory) entry->spec.options.channel_factory = channel_factory_;
  if (entry->spec.options.target_id == 0 && identity_.load() != 0) {
    entry->spec.options.target_id = TargetIdFor(identity_.load(), vol, spec.options.epoch);
  }
  Entry* e = entry.get();
  Status st = StartTarget(e);
  if (st.ok()) st = StartExport(e);
  if (!st.ok()) {
    DestroyEntry(std::move(entry));
    return st;
  }
  TargetInfo info = RunOnLoop<TargetInfo>(loop_, [&] {
    TargetInfo i = InfoOf(*e);
    targets_[vol] = std::move(entry);
    return i;
  });
  TLOG_INFO(kTag, "volume '%s' attached at epoch %llu, %s export %s", vol.c_str(),
            static_cast<unsigned long long>(spec.options.epoch),
            frontend::ExportKindName(spec.export_kind), info.export_description.path.c_str());
  return info;
}

// Starts the target and waits, off the loop and holding no lock, until it
// knows its replicas. UNAVAILABLE (FAILED_PRECONDITION when fenced) naming
// every replica's state when it does not serve in time.
Status TargetManager::StartTarget(Entry* e) {
  const TargetSpec& spec = e->spec;
  const std::string& vol = spec.options.volume_id;
  Status st = RunOnLoop<Status>(loop_, [&] {
    e->target = std::make_unique<VolumeTarget>(loop_, spec.options);
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
    state = RunOnLoop<TargetState>(loop_, [&] { return e->target->state(); });
    if (state != TargetState::kStarting || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (state == TargetState::kReady || state == TargetState::kDegraded) return Status::Ok();
  target::TargetStatus ts =
      RunOnLoop<target::TargetStatus>(loop_, [&] { return e->target->GetStatus(); });
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
  } else {
    es.fuse_mount_dir = export_dir_ + "/" + vol + ".fuse";
  }
  Status st = RunOnLoop<Status>(loop_, [&] {
    Result<std::unique_ptr<frontend::Export>> exp =
        frontend::CreateExport(loop_, e->target.get(), es);
    if (!exp.ok()) return exp.status();
    e->exp = std::move(*exp);
    return e->exp->Start();
  });
  const char* kind = es.kind == frontend::ExportKind::kNbd ? "NBD" : "FUSE file";
  return st.WithContext(std::string(kind) + " export of volume '" + vol + "'");
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
    loop_->Post([&] { e->exp->Shutdown(&Wait::Done, &wait); });
    wait.Await();
  }
  if (e->target) {
    loop_->Post([&] { e->target->Shutdown(&Wait::Done, &wait); });
    wait.Await();
  }
  RunOnLoop<bool>(loop_, [&] {
    entry.reset();
    return true;
  });
}

Status TargetManager::Destroy(const std::string& volume_id) {
  if (!started_) return Status::Ok();
  VolumeGuard guard(this, volume_id);
  TANDEM_RETURN_IF_ERROR(guard.status());
  std::unique_ptr<Entry> entry = RunOnLoop<std::unique_ptr<Entry>>(loop_, [&] {
    std::unique_ptr<Entry> out;
    auto it = targets_.find(volume_id);
    if (it != targets_.end()) {
      out = std::move(it->second);
      targets_.erase(it);
    }
    return out;
  });
  if (!entry) return Status::Ok();
  DestroyEntry(std::move(entry));
  TLOG_INFO(kTag, "volume '%s' detached", volume_id.c_str());
  return Status::Ok();
}

Result<TargetInfo> TargetManager::Get(const std::string& volume_id) {
  if (!started_) return Status::NotFound("no target for volume '" + volume_id + "'");
  return RunOnLoop<Result<TargetInfo>>(loop_, [&]() -> Result<TargetInfo> {
    auto it = targets_.find(volume_id);
    if (it == targets_.end()) return Status::NotFound("no target for volume '" + volume_id + "'");
    return InfoOf(*it->second);
  });
}

std::vector<TargetInfo> TargetManager::List() {
  if (!started_) return {};
  return RunOnLoop<std::vector<TargetInfo>>(loop_, [&] {
    std::vector<TargetInfo> out;
    for (const auto& [vol, e] : targets_) out.push_back(InfoOf(*e));
    return out;  // std::map: sorted by volume id
  });
}

Status TargetManager::WithEntry(const std::string& volume_id,
                                const std::function<Status(Entry*)>& fn) {
  if (!started_) return Status::NotFound("no target for volume '" + volume_id + "'");
  return RunOnLoop<Status>(loop_, [&] {
    auto it = targets_.find(volume_id);
    if (it == targets_.end()) return Status::NotFound("no target for volume '" + volume_id + "'");
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
  if (loop_->stopped()) {
    // A given loop stopped under its targets (its owner broke the order):
    // nothing runs them any more, so waiting for the loop would hang.
    // Destroy them here; their sockets and exports close with them.
    if (!targets_.empty()) {
      TLOG_ERROR(kTag, "the targets' loop stopped before the targets; destroying %zu off it",
                 targets_.size());
    }
    targets_.clear();
    return;
  }
  std::vector<std::string> vols = RunOnLoop<std::vector<std::string>>(loop_, [&] {
    std::vector<std::string> v;
    for (const auto& [vol, e] : targets_) v.push_back(vol);
    return v;
  });
  for (const std::string& v : vols) (void)Destroy(v);
}

}  // namespace tandem::attach

// size: the server's loop (accept, sessions, service list, persists, detach, HELLO binding);
// the loop-thread management tasks are in replica_server_control.cc.
#include "replica-engine/server/replica_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <future>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/server/replica_port.h"
#include "replica-engine/server/replica_session.h"

namespace tandem::server {

namespace {
constexpr const char* kTag = "replica_server";

// Constant-time comparison so the token cannot be guessed byte by byte from
// response timing.
bool TokenEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}
}  // namespace

class ReplicaServer::BackendHandler final : public EventLoop::Handler {
 public:
  explicit BackendHandler(ReplicaServer* server) : server_(server) {}
  void OnEvents(uint32_t) override { server_->OnBackendEvents(); }

 private:
  ReplicaServer* server_;
};

// The backend's batch goes to the kernel after every other idler of the
// iteration: on a shared loop the targets' replica clients flush their sends
// first, so a mirrored write's remote legs leave before the local disk
// submit's io_uring_enter (docs/performance.md, "Where the 3-replica QD1 time
// goes"), and I/O queued by those idlers goes out in the same syscall.
class ReplicaServer::SubmitIdler final : public EventLoop::Idler {
 public:
  explicit SubmitIdler(backend::StorageBackend* backend) : backend_(backend) {}
  void BeforeWait() override { backend_->Submit(); }

 private:
  backend::StorageBackend* backend_;
};

ReplicaServer::ReplicaServer(replica::ReplicaManager* manager, backend::StorageBackend* backend,
                             ServerOptions options)
    : manager_(manager),
      backend_(backend),
      options_(std::move(options)),
      backend_handler_(std::make_unique<BackendHandler>(this)),
      submit_idler_(std::make_unique<SubmitIdler>(backend)),
      pool_(options_.buffer_pool_bytes, protocol::kMaxIoSize) {
  if (const char* v = std::getenv("TANDEM_DIRECT_RX_MIN_BYTES"); v != nullptr && *v != '\0') {
    options_.direct_rx_min_bytes = static_cast<uint32_t>(
        std::min<unsigned long long>(std::strtoull(v, nullptr, 10), UINT32_MAX));
  }
  const uint32_t share = std::max<uint32_t>(1, options_.session_pool_share);
  session_quota_.resize(static_cast<size_t>(pool_.num_classes()));
  for (int c = 0; c < pool_.num_classes(); ++c) {
    const size_t total = pool_.total_buffers(size_t{4096} << c);
    session_quota_[static_cast<size_t>(c)] =
        share == 1 ? UINT32_MAX : static_cast<uint32_t>(std::max<size_t>(1, total / share));
  }
}

ReplicaServer::~ReplicaServer() { Stop(); }

Status ReplicaServer::Start() {
  if (started_) return Status::FailedPrecondition("replica server already started");
  TANDEM_RETURN_IF_ERROR(loop_.init_status());
  // The pool splits its bytes evenly over its size classes; a class without a
  // single kMaxIoSize buffer would park every 1 MiB request forever.
  if (pool_.free_buffers(protocol::kMaxIoSize) == 0) {
    return Status::InvalidArgument("buffer pool of " + std::to_string(options_.buffer_pool_bytes) +
                                   " bytes is too small for one " +
                                   std::to_string(protocol::kMaxIoSize) +
                                   "-byte buffer per size class (use at least 16 MiB)");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.port);
  if (inet_pton(AF_INET, options_.listen_address.c_str(), &addr.sin_addr) != 1) {
    return Status::InvalidArgument("listen address is not an IPv4 address: " +
                                   options_.listen_address);
  }
  listen_fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) return PosixError("socket", errno);
  int one = 1;
  setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  std::string where = options_.listen_address + ":" + std::to_string(options_.port);
  if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return PosixError("bind " + where, errno);
  }
  if (::listen(listen_fd_.get(), 128) != 0) return PosixError("listen " + where, errno);
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  bound_port_ = ntohs(addr.sin_port);

  TANDEM_RETURN_IF_ERROR(loop_.Add(listen_fd_.get(), EPOLLIN, this));
  // Edge-triggered and never read: every completion signal is a new edge
  // (storage_backend.h), and the two reads per wake-up (one to drain, one to
  // see EAGAIN) were two syscalls on every I/O's way back.
  TANDEM_RETURN_IF_ERROR(
      loop_.Add(backend_->CompletionFd(), EPOLLIN | EPOLLET, backend_handler_.get()));
  loop_.AddIdler(this);
  loop_.AddIdler(submit_idler_.get(), /*last=*/true);
  // 100 ms: the granularity of the handshake and idle timeouts (the activity
  // log's pass keeps its own 1 s pace).
  loop_.AddTicker(this, 100);
  loop_.SetBusyPollMicros(options_.busy_poll_us);
  started_ = true;
  thread_ = std::thread([this] {
    if (options_.cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(options_.cpu, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    loop_.Run();
  });
  TLOG_INFO(kTag, "serving replicas on %s:%u with backend %s", options_.listen_address.c_str(),
            bound_port_, backend_->Name());
  return Status::Ok();
}

void ReplicaServer::Stop() {
  if (!started_) return;
  started_ = false;
  loop_.Post([this] {
    stopping_ = true;
    if (!accept_paused_) loop_.Remove(listen_fd_.get());
    listen_fd_.Reset();
    for (auto& s : sessions_) s->Close("server shutting down", false);
  });
  thread_.join();
  loop_.Remove(backend_->CompletionFd());
  loop_.RemoveIdler(this);
  loop_.RemoveIdler(submit_idler_.get());
  loop_.RemoveTicker(this);
  sessions_.clear();
  volumes_.clear();
  persists_.clear();  // empty: the loop ran until the backend had nothing in flight
  persists_done_.clear();
  TLOG_INFO(kTag, "stopped");
}

ServerStats ReplicaServer::GetStats() {
  if (!started_) return stats_;
  std::promise<ServerStats> p;
  std::future<ServerStats> f = p.get_future();
  loop_.Post([this, &p] {
    ServerStats st = stats_;
    for (const auto& session : sessions_) {
      if (session->closing()) continue;
      ++st.sessions_open;
      if (!session->hello_done()) ++st.sessions_handshaking;
    }
    st.rx_buffer_bytes = rx_bytes_;
    p.set_value(st);
  });
  return f.get();
}

void ReplicaServer::OnEvents(uint32_t) {
  // Bounded: the listening socket is level-triggered, so connections left in
  // the backlog bring the loop back after the other handlers had their turn
  // (and the HELLOs of the ones just accepted are read before more pile up
  // against max_handshaking: a burst of reconnecting targets is not evicted).
  for (int i = 0; i < 16; ++i) {
    sockaddr_in peer{};
    socklen_t len = sizeof(peer);
    int fd = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;  // that one is gone
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      // EMFILE/ENFILE/ENOBUFS/ENOMEM: the connection stays in the backlog and
      // the level-triggered listening fd stays readable, so retrying at once
      // would spin the loop at 100 % CPU (and log each time).
      PauseAccepting(err);
      return;
    }
    if (accept_failures_ != 0) {
      TLOG_INFO(kTag, "accepting connections again (%llu accept attempts failed meanwhile)",
                static_cast<unsigned long long>(accept_failures_));
      accept_failures_ = 0;
      accept_backoff_ms_ = 0;
    }
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
    std::string name = std::string(ip) + ":" + std::to_string(ntohs(peer.sin_port));
    if (!AdmitConnection(name)) {
      ::close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto session = std::make_unique<ReplicaSession>(this, UniqueFd(fd), name,
                                                    options_.max_inflight_per_session);
    Status st = loop_.Add(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, session.get());
    if (!st.ok()) {
      TLOG_WARN(kTag, "%s: %s", name.c_str(), st.ToString().c_str());
      continue;
    }
    ++stats_.sessions_accepted;
    TLOG_DEBUG(kTag, "%s: connected", name.c_str());
    sessions_.push_back(std::move(session));
  }
}

void ReplicaServer::PauseAccepting(int err) {
  ++stats_.accept_errors;
  if (accept_failures_++ == 0) {
    ++stats_.accept_pauses;
    TLOG_WARN(
        kTag,
        "accept: %s: not accepting for a while (retrying every 100 ms to 1 s; new connections "
        "wait in the backlog, sessions carry on); logged once until it recovers",
        std::strerror(err));
  }
  // 100 ms (the tick), doubling to 1 s while it lasts: fds come back when sessions or
  // other users close theirs, and nothing tells us when.
  accept_backoff_ms_ = accept_backoff_ms_ == 0 ? 100 : std::min(accept_backoff_ms_ * 2, 1000u);
  accept_resume_ns_ = MonotonicNanos() + uint64_t{accept_backoff_ms_} * 1000000ull;
  if (!accept_paused_) {
    accept_paused_ = true;
    loop_.Remove(listen_fd_.get());
  }
}

void ReplicaServer::MaybeResumeAccepting(uint64_t now) {
  if (!accept_paused_ || now < accept_resume_ns_ || stopping_) return;
  accept_paused_ = false;
  Status st = loop_.Add(listen_fd_.get(), EPOLLIN, this);
  if (!st.ok()) PauseAccepting(ENOMEM);  // epoll itself out of memory: later
}

void ReplicaServer::OnBackendEvents() {
  reaping_ = true;  // a DrainPort from a completion cannot reap (nested Reap is 0)
  backend_->Reap(0, 0);
  reaping_ = false;
}

void ReplicaServer::BeforeWait() {
  // A completion that arrived while this pass ran (or, on a COOP_TASKRUN ring,
  // woke this thread out of epoll_wait with EINTR) is reaped now, so its
  // reply goes out in this pass instead of after another epoll_wait
  // (docs/performance.md, "Where the 1-replica QD1 time goes").
  if (backend_->CompletionsReady()) OnBackendEvents();
  if (!replica_tasks_.empty()) RunReplicaTasks();
  // Sessions first: one stalled on a metadata request retries it now, before
  // RunDirtyWaiters starts the next asynchronous persist (else a steady
  // stream of first touches could keep it waiting forever). Then the parked
  // writes: release those whose bits became durable and start the persist
  // for the rest, so both go out in this iteration's Submit. Failing writes
  // queues replies and servicing may park more writes, so repeat until
  // neither happened.
  do {
    // Service() may queue more sessions (a freed slot unstalls a peer); index loop.
    for (size_t i = 0; i < tx_pending_.size(); ++i) {
      ReplicaSession* s = tx_pending_[i];
      s->tx_pending_ = false;
      s->Service();
    }
    tx_pending_.clear();
    RunDirtyWaiters();
  } while (dirty_new_ || !tx_pending_.empty());
  // The batch is submitted by submit_idler_, last in this iteration.
  before_wait_count_ = loop_.wait_count();
  persists_done_.clear();
  if (!graveyard_.empty()) {
    for (ReplicaSession* dead : graveyard_) {
      auto it = std::find_if(sessions_.begin(), sessions_.end(),
                             [dead](const auto& p) { return p.get() == dead; });
      if (it != sessions_.end()) sessions_.erase(it);
    }
    graveyard_.clear();
  }
  if (stopping_ && sessions_.empty() && backend_->InFlight() == 0) loop_.Stop();
}

void ReplicaServer::OnTick(uint64_t now_ns) {
  MaybeResumeAccepting(now_ns);
  ExpireSessions(now_ns);
  RetireActivity(now_ns);
}

bool ReplicaServer::AdmitConnection(const std::string& peer) {
  uint32_t open = 0;
  uint32_t handshaking = 0;
  ReplicaSession* oldest = nullptr;  // sessions_ is in accept order
  for (const auto& s : sessions_) {
    if (s->closing()) continue;
    ++open;
    if (!s->hello_done()) {
      ++handshaking;
      if (oldest == nullptr) oldest = s.get();
    }
  }
  if (open >= options_.max_connections) {
    ++stats_.connections_refused;
    // One line per 10 s at most: a flood must not flood the log too.
    const uint64_t now = MonotonicNanos();
    if (last_refusal_log_ns_ == 0 || now - last_refusal_log_ns_ > 10'000'000'000ull) {
      last_refusal_log_ns_ = now;
      TLOG_WARN(kTag, "%s: refused: %u connections open (max_connections); %llu refused so far",
                peer.c_str(), open, static_cast<unsigned long long>(stats_.connections_refused));
    }
    return false;
  }
  if (handshaking >= options_.max_handshaking && oldest != nullptr) {
    ++stats_.handshakes_evicted;
    oldest->Close("evicted: too many connections without HELLO (max_handshaking)", false);
  }
  return true;
}

void ReplicaServer::ExpireSessions(uint64_t now) {
  const uint64_t handshake_ns = uint64_t{options_.handshake_timeout_ms} * 1000000ull;
  const uint64_t idle_ns = uint64_t{options_.idle_timeout_ms} * 1000000ull;
  for (auto& s : sessions_) {
    if (s->closing()) continue;
    if (!s->hello_done()) {
      if (now > s->accepted_ns_ && now - s->accepted_ns_ > handshake_ns) {
        ++stats_.handshakes_timed_out;
        s->Close("no HELLO within the handshake timeout", false);
      }
      continue;
    }
    // Busy since the last tick: received bytes, I/O in flight or replies
    // still to send.
    if (s->rx_activity_ || s->inflight() > 0 || !s->tx_.empty()) {
      s->rx_activity_ = false;
      s->last_active_ns_ = now;
      continue;
    }
    if (idle_ns != 0 && now > s->last_active_ns_ && now - s->last_active_ns_ > idle_ns) {
      ++stats_.sessions_idle_closed;
      s->Close("idle for longer than the idle timeout", false);
    }
  }
}

void ReplicaServer::RetireActivity(uint64_t now) {
  if (now < next_retire_ns_ || stopping_) return;
  next_retire_ns_ = now + 900000000ull;  // the 1 s tick, with slack for jitter
  const uint64_t delay = uint64_t{options_.activity_retire_delay_ms} * 1000000ull;
  for (auto& [id, vol] : volumes_) {
    replica::Replica* r = vol.replica.get();
    stats_.activity_extents_retired += r->RetireActivity(now, delay);
    // Lazily: the cleared bits also ride any persist a write starts.
    if (r->activity_clear_pending() && r->can_persist_async() && !r->persist_in_flight()) {
      Status st = StartPersist(vol.replica);
      if (st.ok()) {
        ++stats_.activity_lazy_persists;
      } else {
        TLOG_WARN(kTag, "volume '%s': persisting retired activity-log bits: %s", id.c_str(),
                  st.ToString().c_str());
      }
    }
  }
}

void ReplicaServer::MarkTxPending(ReplicaSession* session) {
  if (session->tx_pending_ || session->closing()) return;
  session->tx_pending_ = true;
  tx_pending_.push_back(session);
}

void ReplicaServer::MarkDirtyWaiting(ReplicaPort* port) {
  dirty_new_ = true;
  if (port->dirty_waiting_) return;
  port->dirty_waiting_ = true;
  dirty_waiting_.push_back(port);
}

void ReplicaServer::RunDirtyWaiters() {
  dirty_new_ = false;
  // Sessions are deleted only in BeforeWait after this, and a port with
  // parked writes has inflight() > 0, so every entry is alive (a port leaves
  // the list when destroyed). Ports still waiting for a persist in flight
  // stay listed (compacted in place).
  size_t keep = 0;
  for (size_t i = 0; i < dirty_waiting_.size(); ++i) {
    ReplicaPort* s = dirty_waiting_[i];
    if (s->ResumeDirtyWaiters()) {
      dirty_waiting_[keep++] = s;
    } else {
      s->dirty_waiting_ = false;
    }
  }
  dirty_waiting_.resize(keep);
}

Status ReplicaServer::StartPersist(const std::shared_ptr<replica::Replica>& replica) {
  TANDEM_RETURN_IF_ERROR(replica->StartPersist(backend_, &ReplicaServer::OnPersistDone, this));
  ++stats_.dirty_map_syncs;
  persists_.push_back(PersistInFlight{replica, replica->persist_request(), {}});
  return Status::Ok();
}

void ReplicaServer::OnPersistDone(backend::IoRequest* req) {
  auto* self = static_cast<ReplicaServer*>(req->ctx);
  auto it = std::find_if(self->persists_.begin(), self->persists_.end(),
                         [req](const PersistInFlight& p) { return p.req == req; });
  if (it == self->persists_.end()) return;  // not reached: every persist is listed
  Status st = it->replica->FinishPersist(req->result);
  if (!st.ok()) {
    ++self->stats_.dirty_map_sync_failures;
    TLOG_ERROR(kTag, "%s", st.ToString().c_str());
  }
  for (DetachWaiter* w : it->waiters) {
    if (--w->pending == 0) w->Signal();
  }
  self->persists_done_.push_back(std::move(it->replica));
  self->persists_.erase(it);
  // The parked writes it covered are released by the next BeforeWait (their
  // sessions are still listed in dirty_waiting_); requests that waited for
  // the metadata to be free are parsed again.
  for (auto& s : self->sessions_) {
    if (s->stalled() && !s->closing()) self->MarkTxPending(s.get());
  }
}

Status ReplicaServer::DetachVolume(const std::string& volume_id) {
  // First, so that no HELLO binds a new session to the replica between the
  // detach and the Delete() that closes its files (whose fds could then be
  // reused by another volume while that session still writes to them).
  manager_->BeginDelete(volume_id);
  if (!started_) return Status::Ok();
  DetachWaiter waiter;
  loop_.Post([this, &volume_id, &waiter] { StartDetach(volume_id, &waiter); });
  waiter.Wait();
  return Status::Ok();
}

void ReplicaServer::StartDetach(const std::string& volume_id, DetachWaiter* waiter) {
  // Every session bound to the volume, including ones already closing (e.g.
  // fenced) that still have backend I/O in flight on the replica's fd.
  waiter->pending = 1;  // held until the scan is done
  for (auto& s : sessions_) {
    const auto& r = s->port().replica();
    if (r == nullptr || r->metadata().volume_id != volume_id) continue;
    // A second DetachVolume of the volume waits for the same sessions; it
    // must not replace the first one's waiter (which would then wait forever).
    s->detach_waiters_.push_back(waiter);
    ++waiter->pending;
    s->Close("volume detached", false);
  }
  // In-process ports (this engine's targets reaching their local replica):
  // closed like a session (their user's next request is NOT_READY and it
  // disconnects) and waited for while their I/O is in flight. The sessions'
  // ports were closed above. A port closed earlier (by its user, or by a
  // first DetachVolume a retried DeleteReplica repeats) is waited for too:
  // its I/O still ends with NoteWriteDone on the replica about to be closed.
  for (ReplicaPort* p : ports_) {
    const auto& r = p->replica();
    if (r == nullptr || r->metadata().volume_id != volume_id) continue;
    if (p->inflight() > 0) {
      p->detach_waiters_.push_back(waiter);
      ++waiter->pending;
    }
    if (!p->closed()) p->Close();
  }
  // A metadata write still in flight on the replica's meta file.
  for (PersistInFlight& p : persists_) {
    if (p.replica->metadata().volume_id != volume_id) continue;
    p.waiters.push_back(waiter);
    ++waiter->pending;
  }
  volumes_.erase(volume_id);
  TLOG_INFO(kTag, "volume '%s': detached %d session(s)", volume_id.c_str(), waiter->pending - 1);
  if (--waiter->pending == 0) waiter->Signal();
}

void ReplicaServer::OnBufferReleased() {
  if (!pool_starved_) return;
  pool_starved_ = false;
  // Let every stalled session retry; the ones still starved stall again.
  for (auto& s : sessions_) {
    if (s->stalled() && !s->closing()) MarkTxPending(s.get());
  }
}

void ReplicaServer::ScheduleDelete(ReplicaSession* session) {
  if (std::find(graveyard_.begin(), graveyard_.end(), session) == graveyard_.end()) {
    graveyard_.push_back(session);
  }
  // Deletion happens in BeforeWait after the service list was walked and
  // cleared, and closing sessions are never re-added, so no dangling entry.
}

void ReplicaServer::DetachSession(ReplicaSession* session) { loop_.Remove(session->fd()); }

void ReplicaServer::UnbindPort(ReplicaPort* port) {
  VolumeState* vol = port->volume();
  if (vol == nullptr) return;
  auto& v = vol->ports;
  v.erase(std::remove(v.begin(), v.end(), port), v.end());
  if (v.empty()) {
    // Forget the volume: the next HELLO reloads the replica (it may have been
    // deleted and re-created) and its persisted epoch.
    volumes_.erase(vol->replica->metadata().volume_id);
  }
}

protocol::WireStatus ReplicaServer::AcceptHello(ReplicaPort* port,
                                                const protocol::HelloRequest& hello,
                                                VolumeState** out, bool* retry) {
  const protocol::WireStatus ws = BindHello(port, hello, out, retry);
  if (*out == nullptr) {
    // Refused, or to be retried: a volume entry this HELLO loaded must not
    // outlive it. A cached entry without sessions would keep the replica
    // open and its highest epoch frozen past a delete, a re-create or a
    // fence reset made meanwhile (the next HELLO must reload both), and the
    // activity-log pass would keep persisting a replica no one serves.
    auto it = volumes_.find(hello.volume_id);
    if (it != volumes_.end() && it->second.ports.empty()) volumes_.erase(it);
  }
  return ws;
}

protocol::WireStatus ReplicaServer::BindHello(ReplicaPort* port,
                                              const protocol::HelloRequest& hello,
                                              VolumeState** out, bool* retry) {
  using protocol::WireStatus;
  if (!options_.auth_token.empty() && !TokenEquals(hello.token, options_.auth_token)) {
    return WireStatus::kAuthFailed;
  }
  auto it = volumes_.find(hello.volume_id);
  if (it != volumes_.end() && manager_->IsDeleting(hello.volume_id)) {
    // Its sessions are about to be detached: do not bind another.
    return WireStatus::kNotFound;
  }
  if (it == volumes_.end()) {
    Result<std::shared_ptr<replica::Replica>> r = manager_->Get(hello.volume_id);
    if (!r.ok()) return WireStatus::kNotFound;
    VolumeState vs;
    vs.replica = *r;
    vs.highest_epoch = vs.replica->metadata().highest_epoch;
    it = volumes_.emplace(hello.volume_id, std::move(vs)).first;
  }
  VolumeState& vol = it->second;
  // A volume with a secret admits only a HELLO proving it over this
  // connection's CHALLENGE nonce (before anything else, the epoch included:
  // without the secret no one fences the volume either).
  const std::string& secret = vol.replica->secret();
  if (!secret.empty() && !protocol::VerifyHelloProof(secret, port->nonce(), hello)) {
    TLOG_WARN(kTag, "volume '%s': HELLO from %s without a valid proof of the volume's secret (%s)",
              hello.volume_id.c_str(), port->peer().c_str(),
              port->nonce().empty() ? "no CHALLENGE on this connection"
              : hello.proof.empty() ? "no proof"
                                    : "wrong proof");
    return WireStatus::kAuthFailed;
  }
  if (hello.epoch < vol.highest_epoch) {
    TLOG_WARN(kTag, "volume '%s': HELLO at epoch %llu refused: epoch %llu has taken over",
              hello.volume_id.c_str(), static_cast<unsigned long long>(hello.epoch),
              static_cast<unsigned long long>(vol.highest_epoch));
    return WireStatus::kStaleEpoch;
  }
  replica::Replica* r = vol.replica.get();
  if (hello.epoch > vol.highest_epoch || r->epoch_owner() != hello.target_id) {
    bool again = false;
    const WireStatus st = hello.epoch > vol.highest_epoch ? RaiseEpoch(&vol, hello, &again)
                                                          : ClaimEpoch(&vol, hello, &again);
    if (again) *retry = true;
    if (st != WireStatus::kOk || again) return st;
  }
  // The reply waits until no write of a superseded (lower-epoch) port is
  // still in flight on the backend: none may land after this target's first
  // request.
  for (const ReplicaPort* p : ports_) {
    if (p != port && p->replica() == vol.replica && p->epoch() < hello.epoch && p->inflight() > 0) {
      ++stats_.hellos_waited_for_fenced_io;
      *retry = true;
      return WireStatus::kOk;
    }
  }
  vol.ports.push_back(port);
  *out = &vol;
  return WireStatus::kOk;
}

protocol::WireStatus ReplicaServer::RaiseEpoch(VolumeState* volp,
                                               const protocol::HelloRequest& hello, bool* retry) {
  using protocol::WireStatus;
  VolumeState& vol = *volp;
  const WireStatus persisted = PersistEpoch(vol.replica.get(), hello, "epoch", retry);
  if (persisted != WireStatus::kOk || *retry) return persisted;
  vol.highest_epoch = hello.epoch;
  // Every session of a lower epoch is superseded: from now on each of its
  // requests (new ones, and the ones in flight when they complete) is
  // answered STALE_EPOCH; its writes still parked for a dirty-map persist
  // never reach the disk.
  for (ReplicaPort* s : vol.ports) {
    if (s->epoch() < hello.epoch && !s->superseded()) {
      ++stats_.sessions_fenced;
      TLOG_INFO(kTag, "volume '%s': %s superseded (epoch %llu < %llu): answering STALE_EPOCH",
                hello.volume_id.c_str(), s->peer().c_str(),
                static_cast<unsigned long long>(s->epoch()),
                static_cast<unsigned long long>(hello.epoch));
      s->Supersede();
    }
  }
  return WireStatus::kOk;
}

protocol::WireStatus ReplicaServer::ClaimEpoch(VolumeState* volp,
                                               const protocol::HelloRequest& hello, bool* retry) {
  using protocol::WireStatus;
  VolumeState& vol = *volp;
  replica::Replica* r = vol.replica.get();
  // An equal epoch: only the target that holds it may connect (again). An
  // unrecorded owner (a fresh replica, or one from before owners were
  // recorded) is claimed by the first target, unless another target still
  // has a session at this epoch.
  bool other = r->epoch_owner() != 0;
  for (ReplicaPort* s : vol.ports) {
    if (s->epoch() == hello.epoch && s->target_id() != hello.target_id && !s->closed()) {
      other = true;
    }
  }
  if (other) {
    TLOG_WARN(kTag,
              "volume '%s': HELLO at epoch %llu from target %016llx refused: that epoch "
              "belongs to target %016llx (STALE_EPOCH)",
              hello.volume_id.c_str(), static_cast<unsigned long long>(hello.epoch),
              static_cast<unsigned long long>(hello.target_id),
              static_cast<unsigned long long>(r->epoch_owner()));
    return WireStatus::kStaleEpoch;
  }
  return PersistEpoch(r, hello, "the owner of epoch", retry);
}

protocol::WireStatus ReplicaServer::PersistEpoch(replica::Replica* r,
                                                 const protocol::HelloRequest& hello,
                                                 const char* what, bool* retry) {
  if (r->persist_in_flight()) {
    ++stats_.requests_waited_for_metadata;
    *retry = true;  // SetHighestEpoch would write the same slot
    return protocol::WireStatus::kOk;
  }
  // Persist before answering: after a restart the replica must still refuse
  // the older target, and any other target at this epoch.
  Status st = r->SetHighestEpoch(hello.epoch, hello.target_id);
  if (!st.ok()) {
    TLOG_ERROR(kTag, "volume '%s': persisting %s %llu failed: %s", hello.volume_id.c_str(), what,
               static_cast<unsigned long long>(hello.epoch), st.ToString().c_str());
    return protocol::WireStatus::kIoError;
  }
  return protocol::WireStatus::kOk;
}

bool ReplicaServer::DrainPort(ReplicaPort* port, uint32_t timeout_ms) {
  port->FailDirtyWaiters(-ECANCELED);  // never submitted: nothing to wait for
  // Inside a backend completion a nested Reap returns 0 at once: waiting
  // would only spin until the deadline.
  if (reaping_) return port->inflight() == 0;
  const uint64_t deadline = MonotonicNanos() + uint64_t{timeout_ms} * 1000000ull;
  while (port->inflight() > 0 && MonotonicNanos() < deadline) {
    reaping_ = true;
    backend_->Reap(1, 10000);  // submits what is queued, then waits up to 10 ms
    reaping_ = false;
  }
  return port->inflight() == 0;
}

void ReplicaServer::WakeStalled() {
  for (auto& s : sessions_) {
    if (s->stalled() && !s->closing()) MarkTxPending(s.get());
  }
}

}  // namespace tandem::server

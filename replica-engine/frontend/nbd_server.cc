#include "replica-engine/frontend/nbd_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/frontend/nbd_connection.h"
#include "replica-engine/frontend/nbd_protocol.h"

namespace tandem::frontend {

namespace {
constexpr const char* kTag = "nbd";
constexpr int kBacklog = 64;
}  // namespace

const char* ExportKindName(ExportKind kind) {
  switch (kind) {
    case ExportKind::kNbd:
      return "nbd";
    case ExportKind::kFuseFile:
      return "fuse_file";
  }
  return "unknown";
}

class NbdServer::Listener final : public EventLoop::Handler {
 public:
  Listener(NbdServer* server, UniqueFd fd, bool tcp)
      : server_(server), fd_(std::move(fd)), tcp_(tcp) {}
  void OnEvents(uint32_t) override { server_->Accept(this); }
  int fd() const { return fd_.get(); }
  bool tcp() const { return tcp_; }
  // Added to the loop (Start); only then is it removed from it.
  bool registered = false;

 private:
  NbdServer* server_;
  UniqueFd fd_;
  bool tcp_;
};

NbdServer::NbdServer(EventLoop* loop, target::BlockDevice* device, NbdServerOptions options)
    : loop_(loop),
      device_(device),
      options_(std::move(options)),
      tx_flags_(nbd::kTxHasFlags | nbd::kTxSendFlush | nbd::kTxSendFua | nbd::kTxSendTrim |
                nbd::kTxSendWriteZeroes | nbd::kTxCanMultiConn) {}

NbdServer::~NbdServer() {
  CloseListeners();
  if (started_) loop_->RemoveIdler(this);
  if (ticking_) loop_->RemoveTicker(this);
  for (auto& conn : connections_) {
    // A connection with device requests in flight outlives us and deletes
    // itself when the last one completes.
    if (!conn->Abandon()) (void)conn.release();
  }
  connections_.clear();
  pending_.clear();
}

Status NbdServer::Prepare() {
  if (prepared_ || started_ || shutting_down_) {
    return Status::FailedPrecondition("NBD server already prepared or started");
  }
  if (options_.unix_path.empty() && options_.tcp_address.empty()) {
    return Status::InvalidArgument("NBD server needs a unix_path or a tcp_address");
  }
  uint32_t bs = device_->block_size();
  if (bs == 0 || (bs & (bs - 1)) != 0 || bs > 65536 || device_->size() % bs != 0 ||
      device_->max_io_size() < bs) {
    return Status::InvalidArgument(
        "NBD export '" + options_.export_name +
        "': device block size must be a power of two <= 64 KiB dividing the size, and "
        "max_io_size at least one block");
  }
  if (!options_.unix_path.empty()) TANDEM_RETURN_IF_ERROR(ListenUnix());
  if (!options_.tcp_address.empty()) {
    Status st = ListenTcp();
    if (!st.ok()) {
      CloseListeners();
      return st;
    }
  }
  prepared_ = true;
  return Status::Ok();
}

Status NbdServer::Start() {
  if (started_) return Status::FailedPrecondition("NBD server already started");
  if (!prepared_) TANDEM_RETURN_IF_ERROR(Prepare());
  for (Listener* l : {unix_listener_.get(), tcp_listener_.get()}) {
    if (l == nullptr) continue;
    Status st = loop_->Add(l->fd(), EPOLLIN, l);
    if (!st.ok()) {
      CloseListeners();
      prepared_ = false;
      return st.WithContext("NBD listen");
    }
    l->registered = true;
  }
  loop_->AddIdler(this);
  started_ = true;
  if (options_.handshake_timeout_ms > 0) {
    loop_->AddTicker(this, std::clamp<uint32_t>(options_.handshake_timeout_ms / 4, 10, 1000));
    ticking_ = true;
  }
  TLOG_INFO(kTag, "export '%s' (%llu bytes) on%s%s%s%s", options_.export_name.c_str(),
            static_cast<unsigned long long>(device_->size()),
            options_.unix_path.empty() ? "" : " unix:", options_.unix_path.c_str(),
            options_.tcp_address.empty() ? "" : " tcp:",
            options_.tcp_address.empty() ? "" : std::to_string(tcp_port_).c_str());
  return Status::Ok();
}

Status NbdServer::ListenUnix() {
  const std::string& path = options_.unix_path;
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("unix socket path too long: " + path);
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    // A socket left by a previous run is stale (we are about to own this
    // path); anything else is not ours to delete.
    if (!S_ISSOCK(st.st_mode)) {
      return Status::InvalidArgument("unix socket path exists and is not a socket: " + path);
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return PosixError("unlink stale socket " + path, errno).WithContext("NBD listen");
    }
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return PosixError("socket(AF_UNIX)", errno);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::Unavailable("bind unix:" + path + ": " + strerror(errno));
  }
  unix_bound_ = true;
  // Whoever can connect can read and write the volume: owner only. bind()
  // made the file 0777 & ~umask; nobody can connect before listen(), so
  // narrowing it here leaves no window (the process-wide umask is not ours to
  // change while other threads create files).
  if (chmod(path.c_str(), kNbdSocketMode) != 0) {
    Status s = PosixError("chmod 0600 " + path, errno).WithContext("NBD listen");
    CloseListeners();
    return s;
  }
  if (listen(fd.get(), kBacklog) != 0) {
    Status s = Status::Unavailable("listen unix:" + path + ": " + strerror(errno));
    CloseListeners();
    return s;
  }
  unix_listener_ = std::make_unique<Listener>(this, std::move(fd), false);
  return Status::Ok();
}

Status NbdServer::ListenTcp() {
  const std::string& address = options_.tcp_address;
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("NBD tcp_address must be host:port: " + address);
  }
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  bool port_ok =
      !port.empty() && port.size() <= 5 &&
      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      std::stoul(port) <= 65535;
  if (!port_ok) return Status::InvalidArgument("NBD tcp_address has a bad port: " + address);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return Status::InvalidArgument("NBD tcp_address " + address + ": " + gai_strerror(rc));
  }
  UniqueFd fd(socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    freeaddrinfo(res);
    return PosixError("socket(tcp)", errno);
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
    int err = errno;
    freeaddrinfo(res);
    return Status::Unavailable("bind tcp:" + address + ": " + strerror(err));
  }
  freeaddrinfo(res);
  if (listen(fd.get(), kBacklog) != 0) {
    return Status::Unavailable("listen tcp:" + address + ": " + strerror(errno));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
    if (bound.ss_family == AF_INET) {
      tcp_port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    } else if (bound.ss_family == AF_INET6) {
      tcp_port_ = ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    }
  }
  tcp_listener_ = std::make_unique<Listener>(this, std::move(fd), true);
  return Status::Ok();
}

void NbdServer::CloseListeners() {
  for (auto* l : {&unix_listener_, &tcp_listener_}) {
    if (*l != nullptr) {
      if ((*l)->registered) loop_->Remove((*l)->fd());
      l->reset();
    }
  }
  if (unix_bound_) {
    unlink(options_.unix_path.c_str());
    unix_bound_ = false;
  }
}

void NbdServer::Accept(Listener* listener) {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int raw = accept4(listener->fd(), reinterpret_cast<sockaddr*>(&peer), &len,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (raw < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        TLOG_WARN(kTag, "export '%s': accept: %s", options_.export_name.c_str(), strerror(errno));
      }
      return;
    }
    UniqueFd fd(raw);
    if (shutting_down_) continue;
    if (connections_.size() >= options_.max_connections) {
      TLOG_WARN(kTag, "export '%s': refusing a connection: %u connections already open",
                options_.export_name.c_str(), options_.max_connections);
      continue;
    }
    std::string name = options_.export_name + "#" + std::to_string(next_conn_id_++);
    if (listener->tcp()) {
      int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      char host[NI_MAXHOST];
      char serv[NI_MAXSERV];
      if (getnameinfo(reinterpret_cast<sockaddr*>(&peer), len, host, sizeof(host), serv,
                      sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        name += std::string(" (") + host + ":" + serv + ")";
      }
    }
    auto conn = std::make_unique<NbdConnection>(this, std::move(fd), name);
    Status st = conn->Start();
    if (!st.ok()) {
      TLOG_WARN(kTag, "%s: cannot start connection: %s", name.c_str(), st.ToString().c_str());
      continue;
    }
    ++stats_.connections_accepted;
    TLOG_DEBUG(kTag, "%s: connected", name.c_str());
    connections_.push_back(std::move(conn));
  }
}

void NbdServer::MarkPending(NbdConnection* conn) {
  if (conn->pending()) return;
  conn->set_pending(true);
  pending_.push_back(conn);
  // Completions may arrive after our BeforeWait ran in this iteration (from
  // another idler): make sure the loop comes round before it sleeps.
  if (pending_.size() == 1) loop_->Wake();
}

void NbdServer::BeforeWait() {
  if (pending_.empty() && !(shutting_down_ && connections_.empty() && !shutdown_done_.empty())) {
    return;
  }
  // Service() may queue connections again: index loop.
  bool any_finished = false;
  for (size_t i = 0; i < pending_.size(); ++i) {
    NbdConnection* c = pending_[i];
    c->set_pending(false);
    if (!c->finished()) c->Service();
    any_finished |= c->finished();
  }
  pending_.clear();
  if (any_finished) {
    connections_.erase(std::remove_if(connections_.begin(), connections_.end(),
                                      [](const auto& c) { return c->finished(); }),
                       connections_.end());
  }
  if (shutting_down_ && connections_.empty() && !shutdown_done_.empty()) {
    auto callbacks = std::move(shutdown_done_);
    shutdown_done_.clear();
    TLOG_INFO(kTag, "export '%s' shut down", options_.export_name.c_str());
    // A callback may destroy this server (and unregister this idler while
    // the loop iterates its idlers): make sure the loop takes another turn.
    loop_->Wake();
    for (auto& [fn, arg] : callbacks) fn(arg);  // `this` may be gone now
  }
}

void NbdServer::OnTick(uint64_t now_ns) {
  uint64_t limit = static_cast<uint64_t>(options_.handshake_timeout_ms) * 1000000ull;
  for (auto& conn : connections_) {
    if (conn->in_handshake() && now_ns - conn->accepted_ns() > limit) {
      TLOG_WARN(kTag, "%s: handshake not finished after %u ms; closing", conn->name().c_str(),
                options_.handshake_timeout_ms);
      conn->BeginShutdown();  // closes at once in the handshake phase
    }
  }
}

ExportDescription NbdServer::Describe() const {
  ExportDescription d;
  d.kind = ExportKind::kNbd;
  if (unix_listener_ != nullptr) d.path = options_.unix_path;
  if (tcp_listener_ != nullptr) {
    std::string host = options_.tcp_address.substr(0, options_.tcp_address.rfind(':'));
    d.address = host + ":" + std::to_string(tcp_port_);
  }
  d.counters.connections = connections_.size();
  d.counters.requests = stats_.requests;
  d.counters.errors = stats_.errors;
  d.counters.bytes_read = stats_.bytes_read;
  d.counters.bytes_written = stats_.bytes_written;
  return d;
}

void NbdServer::Shutdown(void (*done)(void*), void* arg) {
  if (done != nullptr) shutdown_done_.emplace_back(done, arg);
  if (!shutting_down_) {
    shutting_down_ = true;
    CloseListeners();
    for (auto& conn : connections_) conn->BeginShutdown();
    if (!started_) {
      // Never started: no idler runs BeforeWait for us.
      started_ = true;
      loop_->AddIdler(this);
    }
  }
  loop_->Wake();
}

}  // namespace tandem::frontend

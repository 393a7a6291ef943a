#include "controller/store/testing/etcd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace tandem::store::testing {

namespace {

std::string ResolveBinary(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* env = std::getenv("TANDEM_ETCD"); env != nullptr && *env) return env;
  return "/usr/bin/etcd";
}

// A port the kernel considers free right now. Another process could take it
// before etcd binds; etcd then fails to start and Start reports it.
Result<int> FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return PosixError("socket", errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    return PosixError("bind 127.0.0.1:0", err);
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// GET /health on the client port; true when etcd says {"health":"true"}.
bool Healthy(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{.tv_sec = 1, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      std::string resp;
      char buf[1024];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) resp.append(buf, static_cast<size_t>(n));
      ok = resp.find("\"health\":\"true\"") != std::string::npos;
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

bool EtcdAvailable(std::string* binary_out) {
  std::string binary = ResolveBinary("");
  if (binary_out) *binary_out = binary;
  return ::access(binary.c_str(), X_OK) == 0;
}

Result<std::unique_ptr<EtcdProcess>> EtcdProcess::Prepare(const EtcdOptions& options,
                                                          const std::string& name) {
  std::unique_ptr<EtcdProcess> p(new EtcdProcess());
  p->options_ = options;
  p->binary_ = ResolveBinary(options.binary);
  if (::access(p->binary_.c_str(), X_OK) != 0) {
    return Status::NotFound("etcd binary " + p->binary_ +
                            " not found (Debian package etcd-server; or set TANDEM_ETCD)");
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-etcd-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return PosixError("mkdtemp", errno);
  p->dir_ = tmpl;
  p->name_ = name;
  TANDEM_ASSIGN_OR_RETURN(p->client_port_, FreePort());
  TANDEM_ASSIGN_OR_RETURN(p->peer_port_, FreePort());
  TANDEM_ASSIGN_OR_RETURN(p->metrics_port_, FreePort());
  p->endpoint_ = "127.0.0.1:" + std::to_string(p->client_port_);
  p->initial_cluster_ = name + "=http://127.0.0.1:" + std::to_string(p->peer_port_);
  p->cluster_token_ = p->dir_;
  return p;
}

namespace {

// FreePort's ports are free when chosen, but another process (or an
// outgoing connection's ephemeral port) can take one before etcd binds it.
// etcd then exits at once saying so, and a retry with new ports is right.
bool PortClash(const Status& st) {
  return st.message().find("address already in use") != std::string::npos;
}
constexpr int kStartAttempts = 3;

}  // namespace

Result<std::unique_ptr<EtcdProcess>> EtcdProcess::Start(const EtcdOptions& options) {
  for (int attempt = 1;; ++attempt) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<EtcdProcess> p, Prepare(options, "tandem-test"));
    Status st = p->Spawn();
    if (st.ok()) st = p->WaitHealthy();
    if (st.ok()) return p;
    if (attempt == kStartAttempts || !PortClash(st)) return st;
  }
}

Result<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(int members, const EtcdOptions& options) {
  if (members < 1) return Status::InvalidArgument("EtcdCluster needs at least one member");
  for (int attempt = 1;; ++attempt) {
    std::unique_ptr<EtcdCluster> cluster(new EtcdCluster());
    std::string initial;
    for (int i = 0; i < members; ++i) {
      TANDEM_ASSIGN_OR_RETURN(auto m, EtcdProcess::Prepare(options, "m" + std::to_string(i)));
      initial += (i ? "," : "") + m->initial_cluster_;
      cluster->members_.push_back(std::move(m));
    }
    // Every member must run before any can be healthy (it needs a quorum).
    Status st;
    for (auto& m : cluster->members_) {
      m->initial_cluster_ = initial;
      m->cluster_token_ = cluster->members_.front()->dir_;
      if (st.ok()) st = m->Spawn();
    }
    // Wait for all of them; a member that exits (a port clash) fails the
    // start at once rather than leaving the others waiting for a quorum.
    const auto deadline = std::chrono::steady_clock::now() + options.start_timeout;
    while (st.ok()) {
      bool all_healthy = true;
      for (auto& m : cluster->members_) {
        int wstatus = 0;
        if (::waitpid(m->pid_, &wstatus, WNOHANG) == m->pid_) {
          m->pid_ = -1;
          st = Status::Unavailable("etcd " + m->name_ + " exited during start-up; log tail:\n" +
                                   m->LogTail());
          break;
        }
        if (!Healthy(m->metrics_port_)) all_healthy = false;
      }
      if (!st.ok() || all_healthy) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        st = Status::Unavailable("etcd cluster did not become healthy in time; log tail of " +
                                 cluster->members_.front()->name_ + ":\n" +
                                 cluster->members_.front()->LogTail());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (st.ok()) return cluster;
    if (attempt == kStartAttempts || !PortClash(st)) return st;
    // The destructors kill the members that did start and remove their dirs.
  }
}

std::string EtcdCluster::uri() const {
  std::string uri = "etcd://";
  for (size_t i = 0; i < members_.size(); ++i) {
    uri += (i ? "," : "") + members_[i]->endpoint();
  }
  return uri;
}

EtcdProcess::~EtcdProcess() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Status EtcdProcess::Spawn() {
  const bool tls = !options_.tls.cert_file.empty();
  const std::string client = (tls ? "https://" : "http://") + endpoint_;
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  std::vector<std::string> args = {
      binary_,
      "--name=" + name_,
      "--data-dir=" + dir_ + "/data",
      "--listen-client-urls=" + client,
      "--advertise-client-urls=" + client,
      "--listen-peer-urls=" + peer,
      "--initial-advertise-peer-urls=" + peer,
      "--initial-cluster=" + initial_cluster_,
      // Unique per cluster: members never join another test's cluster.
      "--initial-cluster-token=" + cluster_token_,
      "--initial-cluster-state=new",
      // Plain-HTTP /health for WaitHealthy, whether the client port is TLS or not.
      "--listen-metrics-urls=http://127.0.0.1:" + std::to_string(metrics_port_),
      "--log-level=warn",
      "--logger=zap",
  };
  if (tls) {
    args.push_back("--cert-file=" + options_.tls.cert_file);
    args.push_back("--key-file=" + options_.tls.key_file);
    if (!options_.tls.client_ca_file.empty()) {
      args.push_back("--client-cert-auth");
      args.push_back("--trusted-ca-file=" + options_.tls.client_ca_file);
    }
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = dir_ + "/etcd.log";
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) return PosixError("fork", errno);
  if (pid == 0) {
    // Child: die with the test process, whatever happens to it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    // Own process group: a Ctrl-C in the terminal reaches the test, which
    // then kills etcd through its destructor or PDEATHSIG.
    ::setpgid(0, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  return Status::Ok();
}

Status EtcdProcess::WaitHealthy() {
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus = 0;
    if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
      pid_ = -1;
      return Status::Unavailable("etcd exited during start-up; log tail:\n" + LogTail());
    }
    if (Healthy(metrics_port_)) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Kill();
  return Status::Unavailable("etcd did not become healthy in time; log tail:\n" + LogTail());
}

std::string EtcdProcess::LogTail() const {
  std::ifstream in(dir_ + "/etcd.log");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > 4000 ? all.substr(all.size() - 4000) : all;
}

void EtcdProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);  // a paused etcd must not stay stopped if SIGKILL raced
  ::kill(pid_, SIGKILL);
  int wstatus = 0;
  while (::waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void EtcdProcess::Pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void EtcdProcess::Resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

Status EtcdProcess::Restart() {
  Kill();
  TANDEM_RETURN_IF_ERROR(Spawn());
  return WaitHealthy();
}

}  // namespace tandem::store::testing

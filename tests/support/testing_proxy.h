#pragma once
// Test helper: a TCP proxy on 127.0.0.1 between a target and one replica
// server that counts the data-protocol requests passing through it (by
// opcode), so a test can assert what a target sent (e.g. a FLUSH after a FUA
// TRIM). One thread, poll(), bounded buffers; connections are forwarded byte
// for byte.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "replica-engine/protocol/wire_format.h"

namespace tandem::target::target_testing {

class CountingProxy {
 public:
  explicit CountingProxy(uint16_t server_port) : server_port_(server_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(listen_fd_, 16);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~CountingProxy() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
    for (Pipe& p : pipes_) {
      ::close(p.client);
      ::close(p.server);
    }
  }
  CountingProxy(const CountingProxy&) = delete;
  CountingProxy& operator=(const CountingProxy&) = delete;

  uint16_t port() const { return port_; }
  // Requests with this opcode seen from targets so far.
  uint64_t Count(protocol::Opcode op) const { return counts_[static_cast<uint8_t>(op) & 31]; }

 private:
  struct Pipe {
    int client = -1;
    int server = -1;
    std::vector<uint8_t> parse;  // client->server bytes not yet parsed
    bool dead = false;           // shut down: no longer polled
  };

  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds;
      fds.push_back({listen_fd_, POLLIN, 0});
      for (Pipe& p : pipes_) {
        fds.push_back({p.dead ? -1 : p.client, POLLIN, 0});  // fd -1: ignored by poll
        fds.push_back({p.dead ? -1 : p.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      const size_t polled = (fds.size() - 1) / 2;  // Accept() below adds pipes
      for (size_t i = 0; i < polled; ++i) {
        Pipe& p = pipes_[i];
        if (fds[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) Forward(&p, true);
        if (fds[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) Forward(&p, false);
      }
      if (fds[0].revents & POLLIN) Accept();
    }
  }

  void Accept() {
    int c = ::accept(listen_fd_, nullptr, nullptr);
    if (c < 0) return;
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(server_port_);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ::close(c);
      ::close(s);
      return;
    }
    pipes_.push_back({c, s, {}, false});
  }

  void Forward(Pipe* p, bool from_client) {
    uint8_t buf[65536];
    int in = from_client ? p->client : p->server;
    int out = from_client ? p->server : p->client;
    ssize_t n = ::recv(in, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) {
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::shutdown(p->client, SHUT_RDWR);
        ::shutdown(p->server, SHUT_RDWR);
        p->dead = true;
      }
      return;
    }
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::send(out, buf + off, n - off, MSG_NOSIGNAL);
      if (w <= 0) return;
      off += w;
    }
    if (!from_client) return;
    p->parse.insert(p->parse.end(), buf, buf + n);
    // Frames: a 48-byte header (opcode at byte 5, payload_length at 28..31).
    size_t pos = 0;
    while (p->parse.size() - pos >= protocol::kHeaderSize) {
      uint32_t payload = 0;
      std::memcpy(&payload, p->parse.data() + pos + 28, 4);  // little-endian host
      if (p->parse.size() - pos < protocol::kHeaderSize + payload) break;
      ++counts_[p->parse[pos + 5] & 31];
      pos += protocol::kHeaderSize + payload;
    }
    p->parse.erase(p->parse.begin(), p->parse.begin() + static_cast<std::ptrdiff_t>(pos));
  }

  uint16_t server_port_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::vector<Pipe> pipes_;  // proxy thread only
  std::array<std::atomic<uint64_t>, 32> counts_{};
  std::thread thread_;
};

}  // namespace tandem::target::target_testing

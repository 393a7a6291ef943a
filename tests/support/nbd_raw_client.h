#pragma once
// RawClient: a blocking NBD client over a unix socket, speaking the raw
// protocol (handshake, options, requests, simple replies), with 10 s socket
// timeouts so no test hangs. For tests of the NBD server that need exact
// control over what is sent and when (bad input, split payloads).

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "replica-engine/frontend/nbd_protocol.h"

namespace tandem::frontend::testing {

// Connect()'s default export name is "vol", the NBD server tests' export.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() { close(fd_); }

  bool connected() const { return connected_; }

  bool Send(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
      ssize_t w = send(fd_, b, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      b += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  bool Recv(void* p, size_t n) {
    uint8_t* b = static_cast<uint8_t*>(p);
    while (n > 0) {
      ssize_t r = recv(fd_, b, n, 0);
      if (r <= 0) return false;
      b += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
  // True when the server closed the connection (EOF or reset) within the
  // receive timeout, discarding anything it sent before.
  bool WaitClosed() {
    uint8_t b[4096];
    for (;;) {
      ssize_t r = recv(fd_, b, sizeof(b), 0);
      if (r == 0) return true;
      if (r < 0) return errno == ECONNRESET;
    }
  }

  // Reads the greeting and sends client flags.
  bool Hello(uint32_t client_flags = nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes) {
    uint8_t g[nbd::kGreetingSize];
    if (!Recv(g, sizeof(g))) return false;
    if (nbd::GetBe64(g) != nbd::kNbdMagic || nbd::GetBe64(g + 8) != nbd::kIHaveOpt) return false;
    uint8_t f[4];
    nbd::PutBe32(f, client_flags);
    return Send(f, 4);
  }
  bool SendOption(uint32_t option, const std::string& data, uint32_t length_override = 0,
                  uint64_t magic = nbd::kIHaveOpt) {
    uint8_t h[nbd::kOptionHeaderSize];
    nbd::PutBe64(h, magic);
    nbd::PutBe32(h + 8, option);
    nbd::PutBe32(h + 12, length_override ? length_override : static_cast<uint32_t>(data.size()));
    return Send(h, sizeof(h)) && Send(data.data(), data.size());
  }
  struct OptReply {
    uint32_t option = 0;
    uint32_t type = 0;
    std::string data;
  };
  bool ReadOptReply(OptReply* r) {
    uint8_t h[nbd::kOptionReplyHeaderSize];
    if (!Recv(h, sizeof(h)) || nbd::GetBe64(h) != nbd::kOptReplyMagic) return false;
    r->option = nbd::GetBe32(h + 8);
    r->type = nbd::GetBe32(h + 12);
    r->data.resize(nbd::GetBe32(h + 16));
    return Recv(r->data.data(), r->data.size());
  }
  static std::string InfoData(const std::string& name, std::vector<uint16_t> types) {
    std::string d(4, '\0');
    nbd::PutBe32(reinterpret_cast<uint8_t*>(d.data()), static_cast<uint32_t>(name.size()));
    d += name;
    std::string t(2 + 2 * types.size(), '\0');
    auto* tb = reinterpret_cast<uint8_t*>(t.data());
    nbd::PutBe16(tb, static_cast<uint16_t>(types.size()));
    for (size_t i = 0; i < types.size(); ++i) nbd::PutBe16(tb + 2 + 2 * i, types[i]);
    return d + t;
  }
  // NBD_OPT_GO; returns the final reply type, fills size/flags from INFO_EXPORT.
  uint32_t Go(const std::string& name, uint64_t* size = nullptr, uint16_t* flags = nullptr) {
    if (!SendOption(nbd::kOptGo, InfoData(name, {nbd::kInfoBlockSize}))) return 0;
    for (;;) {
      OptReply r;
      if (!ReadOptReply(&r)) return 0;
      if (r.type == nbd::kRepInfo && r.data.size() == 12) {
        auto* b = reinterpret_cast<const uint8_t*>(r.data.data());
        if (size) *size = nbd::GetBe64(b + 2);
        if (flags) *flags = nbd::GetBe16(b + 10);
      }
      if (r.type != nbd::kRepInfo) return r.type;
    }
  }
  bool Connect(const std::string& name = "vol") { return Hello() && Go(name) == nbd::kRepAck; }

  bool SendRequest(uint16_t type, uint64_t offset, uint32_t length, uint64_t cookie,
                   uint16_t flags = 0, const void* payload = nullptr, uint32_t magic = 0) {
    nbd::Request r;
    r.type = type;
    r.flags = flags;
    r.cookie = cookie;
    r.offset = offset;
    r.length = length;
    uint8_t b[nbd::kRequestSize];
    nbd::EncodeRequest(r, b);
    if (magic != 0) nbd::PutBe32(b, magic);
    if (!Send(b, sizeof(b))) return false;
    return payload == nullptr || Send(payload, length);
  }
  // Reads one simple reply; *error and *cookie out.
  bool ReadReply(uint32_t* error, uint64_t* cookie) {
    uint8_t b[nbd::kSimpleReplySize];
    if (!Recv(b, sizeof(b)) || nbd::GetBe32(b) != nbd::kSimpleReplyMagic) return false;
    *error = nbd::GetBe32(b + 4);
    *cookie = nbd::GetBe64(b + 8);
    return true;
  }
  // Write then wait for its reply; returns the NBD error or UINT32_MAX.
  uint32_t Write(uint64_t offset, const std::vector<uint8_t>& data, uint16_t flags = 0) {
    uint32_t err;
    uint64_t cookie;
    if (!SendRequest(nbd::kCmdWrite, offset, static_cast<uint32_t>(data.size()), 1, flags,
                     data.data()) ||
        !ReadReply(&err, &cookie)) {
      return UINT32_MAX;
    }
    return err;
  }
  uint32_t Read(uint64_t offset, uint32_t length, std::vector<uint8_t>* out) {
    uint32_t err;
    uint64_t cookie;
    if (!SendRequest(nbd::kCmdRead, offset, length, 2) || !ReadReply(&err, &cookie)) {
      return UINT32_MAX;
    }
    if (err == 0) {
      out->resize(length);
      if (!Recv(out->data(), length)) return UINT32_MAX;
    }
    return err;
  }
  uint32_t Simple(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
    uint32_t err;
    uint64_t cookie;
    if (!SendRequest(type, offset, length, 3, flags) || !ReadReply(&err, &cookie)) {
      return UINT32_MAX;
    }
    return err;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

}  // namespace tandem::frontend::testing

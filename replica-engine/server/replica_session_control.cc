// ReplicaSession: the connection's handshake frames (CHALLENGE, HELLO); the
// rules behind them are the port's (replica_port.h). The framing, slots and
// the data path are in replica_session.cc; see replica_session.h.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/crc32c.h"
#include "common/logging.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/server/replica_session.h"

namespace tandem::server {

using protocol::FrameHeader;
using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "replica_session";
}  // namespace

void ReplicaSession::HandleChallenge(Slot* s, const FrameHeader& h) {
  // One nonce per connection, before HELLO: a second one, or one after HELLO,
  // is a broken peer.
  if (hello_done_ || !port_.nonce().empty() || h.payload_length != 0) {
    QueueReply(s, WireStatus::kInvalid);
    close_after_flush_ = true;
    return;
  }
  Status st = port_.MakeNonce();
  if (!st.ok()) {
    TLOG_ERROR(kTag, "%s: CHALLENGE: %s", peer_.c_str(), st.ToString().c_str());
    QueueReply(s, WireStatus::kIoError);
    close_after_flush_ = true;
    return;
  }
  s->req.control = port_.nonce();
  UseControlReply(s);
  QueueReply(s, WireStatus::kOk);
}

bool ReplicaSession::HandleHello(Slot* s, const uint8_t* payload, uint32_t len) {
  protocol::HelloRequest hello;
  Status st =
      protocol::DecodeHello(std::string_view(reinterpret_cast<const char*>(payload), len), &hello);
  if (!st.ok()) {
    TLOG_WARN(kTag, "%s: bad HELLO: %s", peer_.c_str(), st.ToString().c_str());
    QueueReply(s, WireStatus::kInvalid);
    close_after_flush_ = true;
    return true;
  }
  if (hello_done_) {
    QueueReply(s, WireStatus::kInvalid);  // one HELLO per connection
    close_after_flush_ = true;
    return true;
  }
  bool retry = false;
  WireStatus ws = port_.Open(hello, &retry);
  if (retry) return false;
  if (ws != WireStatus::kOk) {
    QueueReply(s, ws);
    close_after_flush_ = true;
    return true;
  }
  hello_done_ = true;
  GrowRx();
  s->req.op = Opcode::kGetInfo;
  ws = port_.Control(&s->req);  // the HELLO reply carries the ReplicaInfo
  UseControlReply(s);
  QueueReply(s, ws);
  return true;
}

}  // namespace tandem::server

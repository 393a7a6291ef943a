#pragma once
// ReplicaPort: one target's access to one replica of a ReplicaServer, with
// the replica rules and nothing of the transport. A ReplicaSession (TCP) owns
// one per connection; an in-process channel can own one the same way
// (docs/performance.md, "the local replica served in-process").
//
// The rules it keeps (docs/protocol.md):
//   Open       the HELLO: token, the volume secret's proof over this port's
//              nonce, epoch and target_id (ReplicaServer::AcceptHello);
//              after a newer target's HELLO the port is superseded and
//              answers STALE_EPOCH.
//   Start      READ/WRITE/FLUSH/TRIM/WRITE_ZEROES and MARK_DIRTY/CLEAR_DIRTY:
//              range checks; the activity-log and dirty-map bits of a write
//              persisted before it is submitted (else it is parked); FUA;
//              FLUSH retiring the log once it completed.
//   Control    GET_INFO, SET_GENERATION, GET_DIRTY_MAP, GET_ALLOCATION,
//              SET_REBUILD_CURSOR, answered synchronously on the loop.
//
// Threading: the server's loop thread only. Nothing is allocated or locked
// per I/O: the PortRequest (with its backend::IoRequest inline) belongs to
// the caller, and completion comes through its `done` callback from the
// loop, never from inside Start().

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/intrusive_list.h"
#include "common/status.h"
#include "replica-engine/backend/storage_backend.h"
#include "replica-engine/protocol/frame_codec.h"
#include "replica-engine/replica/replica.h"

namespace tandem::server {

class ReplicaServer;
struct VolumeState;
struct DetachWaiter;

class ReplicaPort;
struct PortRequest;
using PortDoneFn = void (*)(PortRequest* req);

// One request on a port. The fields mirror a data-protocol request frame.
struct PortRequest {
  protocol::Opcode op = protocol::Opcode::kRead;
  uint16_t flags = 0;   // protocol::kFlagFua, kFlagTrackDirty, kFlagActivity
  uint64_t offset = 0;  // bytes (kSetGeneration: the generation)
  uint32_t length = 0;  // bytes
  // kWrite: the data, kRead: the destination (length bytes, aligned for
  // O_DIRECT). kSetGeneration, kSetRebuildCursor: their payload.
  void* buf = nullptr;
  // Bytes of payload that came with the request (a WRITE's data, a
  // SET_GENERATION's record...): checked against the op like a frame's.
  uint32_t payload_length = 0;
  PortDoneFn done = nullptr;
  void* ctx = nullptr;  // caller's

  // Out: the reply's status and, for Control(), its payload (in `control`).
  protocol::WireStatus status = protocol::WireStatus::kOk;
  std::string control;

  // Port-private.
  backend::IoRequest io;
  ReplicaPort* port_ = nullptr;
  uint64_t dirty_seq = 0;  // parked write: the Replica::dirty_seq() it waits for
  uint64_t flush_seq = 0;  // FLUSH: Replica::NoteFlushReceived()
  PortRequest* next_ = nullptr;
};

class ReplicaPort {
 public:
  // `peer` names the port's user in logs; `max_inflight` is advertised in
  // the HELLO/GET_INFO reply.
  ReplicaPort(ReplicaServer* server, std::string peer, uint32_t max_inflight);
  ~ReplicaPort();  // REQUIRES: inflight() == 0; on the loop. Leaves its volume.
  ReplicaPort(const ReplicaPort&) = delete;
  ReplicaPort& operator=(const ReplicaPort&) = delete;

  // The HELLO. kOk: bound to the volume's replica. Any other status: refused
  // (the port stays unbound). *retry: nothing decided, call again later
  // (the replica's metadata is busy, or a superseded port's I/O is still in
  // flight); the server wakes stalled sessions when that changes.
  protocol::WireStatus Open(const protocol::HelloRequest& hello, bool* retry);
  // A fresh nonce a HELLO must prove the volume's secret over (once per port).
  Status MakeNonce();
  const std::string& nonce() const { return nonce_; }

  // The request kinds Start() takes (the others go to Control()).
  static bool IsIo(protocol::Opcode op);
  // Start()'s checks alone (the caller may need them before it prepares a
  // buffer): kOk or the status Start() would refuse with.
  protocol::WireStatus Check(const PortRequest& req) const;
  // kOk: started; req->done is called on the loop once it completed, with
  // req->status set (never from inside Start). Any other status: refused
  // now, and no callback. For WRITE the data must be in req->buf already.
  protocol::WireStatus Start(PortRequest* req);
  // Control requests, answered now: the status is returned and any reply
  // payload is left in req->control.
  protocol::WireStatus Control(PortRequest* req);
  // SET_GENERATION and SET_REBUILD_CURSOR write the metadata synchronously:
  // while a persist is in flight they must wait (the caller retries them).
  bool metadata_busy() const { return replica_ != nullptr && replica_->persist_in_flight(); }

  // The port's user goes away: parked writes are dropped (-ECANCELED) and the
  // port leaves its volume; I/O in flight still completes through `done`.
  void Close();
  // A newer epoch took the volume over: every later reply is kStaleEpoch
  // (new requests, and in-flight ones as they complete) and parked writes
  // are dropped.
  void Supersede();

  bool opened() const { return replica_ != nullptr; }
  bool superseded() const { return superseded_; }
  bool closed() const { return closed_; }
  uint64_t epoch() const { return epoch_; }
  uint64_t target_id() const { return target_id_; }
  const std::string& peer() const { return peer_; }
  VolumeState* volume() const { return volume_; }
  const std::shared_ptr<replica::Replica>& replica() const { return replica_; }
  // Backend requests in flight, parked ones included.
  uint32_t inflight() const { return inflight_; }

 private:
  friend class ReplicaServer;
  using RequestQueue = IntrusiveQueue<PortRequest, &PortRequest::next_>;

  // Replica errors on the dirty-map paths, as a reply status.
  static protocol::WireStatus FromReplicaStatus(const Status& st);
  protocol::WireStatus CheckRange(const PortRequest& r, bool needs_length) const;
  protocol::WireStatus StartDirtyUpdate(PortRequest* r);
  void ParkForPersist(PortRequest* r);
  static void OnIoDone(backend::IoRequest* io);
  // Submits the parked writes whose dirty bits are durable, fails those whose
  // persist failed, and starts a persist for the rest if none is in flight.
  // True while some stay parked (waiting for a persist in flight).
  bool ResumeDirtyWaiters();
  void FailDirtyWaiters(int result);

  // Control() cases (replica_port_control.cc).
  protocol::WireStatus HandleDirtyOp(PortRequest* r);
  protocol::WireStatus HandleGetAllocation(PortRequest* r);
  protocol::WireStatus HandleSetRebuildCursor(PortRequest* r);
  void SetInfoReply(PortRequest* r);

  ReplicaServer* server_;
  std::string peer_;
  uint32_t max_inflight_;
  std::string nonce_;
  uint64_t epoch_ = 0;
  uint64_t target_id_ = 0;
  // Bound at Open; valid until Close (owned by the server).
  VolumeState* volume_ = nullptr;
  // Held until the port is destroyed, so the replica (and its data fd)
  // outlives every I/O this port submitted, even after volume_ is gone.
  std::shared_ptr<replica::Replica> replica_;
  int data_fd_ = -1;
  uint64_t size_ = 0;
  uint32_t block_size_ = 0;
  uint32_t inflight_ = 0;
  bool superseded_ = false;
  bool closed_ = false;
  bool dirty_waiting_ = false;  // queued in the server's dirty-waiter list
  // DetachVolume calls waiting for this (in-process) port's I/O to finish;
  // signalled when inflight_ reaches 0.
  std::vector<DetachWaiter*> detach_waiters_;
  // Writes parked until the replica's dirty map is persisted (they count in
  // inflight_).
  RequestQueue dirty_;
};

}  // namespace tandem::server

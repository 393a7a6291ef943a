#pragma once
// NbdConnection: one client connection of an NbdServer, from the greeting
// through option haggling to transmission. Owned by the server (until the
// server is destroyed with device requests still in flight: then the
// connection owns itself and is deleted by its last completion). Used only
// on the loop thread.
//
// Per connection, preallocated at accept: a receive buffer, a table of
// request slots (each carrying its BlockRequests, reply header and state
// inline) and a BufferArena of kArenaBytes for READ/WRITE data. A request
// takes a slot and, for READ/WRITE, an arena buffer from parsing until its
// reply is written; with none free the connection stops reading its socket.
// Copies: WRITE data is read straight into its arena buffer (or copied once
// from the receive buffer when it arrived with the header); READ data goes
// from the arena buffer to the socket with sendmsg.
//
// Requests above the device's max_io_size() are split into pieces of at most
// max_io_size(), up to kPartsPerSlot in flight per request; the reply is sent
// when every piece has completed, with the first error seen.

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "common/unique_fd.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/frontend/buffer_arena.h"
#include "replica-engine/frontend/nbd_protocol.h"

namespace tandem::frontend {

class NbdServer;

class NbdConnection final : public EventLoop::Handler {
 public:
  // Data buffer space per connection: one maximal NBD payload, so every
  // acceptable request fits once the connection is idle.
  static constexpr size_t kArenaBytes = nbd::kMaxPayload;
  static constexpr uint32_t kPartsPerSlot = 4;
  static constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLET;

  NbdConnection(NbdServer* server, UniqueFd fd, std::string name);
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  // Allocates the buffers, registers the socket with the loop and sends the
  // greeting. Non-OK: the connection is unusable (the server drops it).
  Status Start();

  void OnEvents(uint32_t events) override;
  // From the server's BeforeWait: write queued replies, resume reading after
  // backpressure, and notice when the connection has drained.
  void Service();
  // Server shutdown: a connection still in the handshake closes now; one in
  // transmission stops reading, finishes its requests, writes their replies
  // and closes.
  void BeginShutdown();
  // True once closed with no device request in flight: the server may
  // delete it.
  bool finished() const { return finished_; }
  // Server destruction: closes the socket now. Returns true when the caller
  // may delete the connection; false when device requests are still in
  // flight, in which case the connection deletes itself after the last one.
  bool Abandon();

  const std::string& name() const { return name_; }
  bool in_handshake() const { return phase_ != Phase::kTransmission && !dead_; }
  uint64_t accepted_ns() const { return accepted_ns_; }
  bool pending() const { return pending_; }
  void set_pending(bool p) { pending_ = p; }

 private:
  enum class Phase : uint8_t { kClientFlags, kOptions, kTransmission };

  struct Slot {
    target::BlockRequest parts[kPartsPerSlot];
    NbdConnection* conn = nullptr;
    nbd::Request req;
    uint8_t* buf = nullptr;  // arena buffer (READ/WRITE), req.length bytes
    uint64_t next = 0;       // bytes of the request already handed to the device
    uint32_t parts_inflight = 0;
    StatusCode status = StatusCode::kOk;  // first device error
    uint32_t error = 0;                   // NBD error of the reply
    uint8_t reply[nbd::kSimpleReplySize];
    uint32_t payload_len = 0;   // data bytes after the reply header
    uint32_t sent = 0;          // bytes of header + payload written
    Slot* next_slot = nullptr;  // free list or tx queue
  };
  using SlotQueue = IntrusiveQueue<Slot, &Slot::next_slot>;

  // Reads and parses until the socket is drained, a resource runs out
  // (stalled_) or reading stops.
  void Pump();
  // Handles one complete message at the head of the receive buffer. Returns
  // false when more bytes are needed (or the connection stalled or closed).
  bool ParseOne();
  bool ParseOption();
  bool ParseRequest();
  void HandleOption(uint32_t option, const uint8_t* data, uint32_t len);
  void HandleInfoOrGo(uint32_t option, const uint8_t* data, uint32_t len);
  bool NameMatches(std::string_view name) const;
  void EnterTransmission();
  // recv() into the receive buffer; returns bytes read, 0 at EOF (reading
  // stops), -1 on EAGAIN or error, or when the socket is known to be empty.
  ssize_t RecvToBuffer();
  // After a recv() that returned `got` of `want` bytes.
  void NoteRecv(size_t got, size_t want);
  // The socket was empty with `need` bytes of rx_slot_'s payload to come:
  // true when it is worth spinning for them (write_payload_spin_us).
  bool MaySpinForPayload(uint32_t need) const;
  // Retries recv() into rx_slot_'s buffer until bytes come, the peer hangs up
  // or fails, or the payload's spin deadline passes. recv()'s result; -1
  // with errno EAGAIN when the deadline passed first.
  ssize_t SpinRecvPayload(uint32_t need);

  void StartRequest(Slot* slot);
  void SubmitPart(Slot* slot, target::BlockRequest* part);
  static void OnPartDone(target::BlockRequest* part);
  void FinishRequest(Slot* slot);
  void QueueReply(Slot* slot);
  void ReleaseSlot(Slot* slot);
  void Flush();
  // Adds (a send hit EAGAIN) or drops (drained) EPOLLOUT in the epoll set.
  void SetWriteInterest(bool on);

  // Protocol violation: WARNING log, bad-input stat, hard close.
  void ProtocolError(const char* what);
  // Hard close: stop reading and writing now; in-flight device requests
  // still complete (their results are dropped).
  void CloseNow();
  // Soft close: stop reading, finish requests, write replies, then close.
  void Drain();
  void MaybeFinish();
  void Kick();  // Service() again soon

  NbdServer* server_;  // null once abandoned
  EventLoop* loop_;
  target::BlockDevice* device_;
  UniqueFd fd_;
  std::string name_;
  nbd::ExportGeometry geometry_;
  uint32_t max_part_;  // largest piece per BlockRequest (a block_size multiple)
  uint64_t spin_ns_;   // write_payload_spin_us in ns; 0: never spin

  uint64_t accepted_ns_;
  Phase phase_ = Phase::kClientFlags;
  bool no_zeroes_ = false;

  std::unique_ptr<uint8_t[]> rx_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;
  // WRITE payload being received into rx_slot_->buf (rx_done_ bytes so far).
  Slot* rx_slot_ = nullptr;
  uint32_t rx_done_ = 0;
  // When the spin for rx_slot_'s payload ends (MonotonicNanos); 0: it has
  // not spun yet. One deadline per payload, so a client trickling its
  // payload cannot keep the loop spinning.
  uint64_t rx_spin_until_ns_ = 0;
  uint64_t discard_left_ = 0;  // payload bytes of a rejected WRITE to skip
  // False once a recv() came back short or with EAGAIN: the socket is empty
  // until the next EPOLLIN. rx_hup_seen_: the peer hung up; read to the EOF.
  bool rx_maybe_more_ = true;
  bool rx_hup_seen_ = false;

  std::string hs_out_;  // handshake bytes not yet written
  size_t hs_sent_ = 0;

  std::vector<Slot> slots_;
  SlotQueue free_;  // used as a stack
  SlotQueue tx_;
  BufferArena arena_;
  std::vector<iovec> iov_;

  uint32_t device_inflight_ = 0;  // BlockRequests submitted, not completed
  bool registered_ = false;
  bool read_closed_ = false;  // no more parsing
  bool dead_ = false;         // socket unusable: replies are dropped
  bool stalled_ = false;      // waiting for a slot or an arena buffer
  bool writable_ = true;
  bool out_armed_ = false;  // EPOLLOUT is in the epoll set
  bool pending_ = false;    // queued in the server's service list
  bool in_service_ = false;
  bool again_ = false;  // Service() should run its body once more
  bool finished_ = false;
  bool orphaned_ = false;
};

}  // namespace tandem::frontend

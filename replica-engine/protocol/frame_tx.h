#pragma once
// Outgoing frames, shared by both ends of the data protocol (the replica
// session's replies, the replica client's requests). Each end keeps the
// frames it has to write in an intrusive FIFO of its own slots and writes
// many with one writev/sendmsg; these two helpers are that bookkeeping, so it
// exists once:
//   GatherFrames   lists what is left to write as iovecs;
//   ConsumeFrames  moves the bytes a write took off the front of the FIFO.
//
// A Frame is any struct with
//   uint8_t hdr[kHeaderSize];   the encoded header
//   const uint8_t* payload;     payload_len bytes sent after it (may be null
//   uint32_t payload_len;       when payload_len is 0)
//   uint32_t sent;              bytes of header + payload already written
//   Frame* next;                the FIFO link (an IntrusiveQueue's)
//
// Pure: no sockets, no allocation; the caller owns the iovec array.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "replica-engine/protocol/wire_format.h"

namespace tandem::protocol {

// Fills iov[0, n) with the unwritten bytes of the frames from `head` on, two
// entries per frame at most, stopping before max_iov would be exceeded.
// Returns n (0 when head is null). REQUIRES: max_iov >= 2.
template <typename Frame>
size_t GatherFrames(Frame* head, iovec* iov, size_t max_iov) {
  size_t n = 0;
  for (Frame* f = head; f != nullptr && n + 2 <= max_iov; f = f->next) {
    uint32_t sent = f->sent;
    if (sent < kHeaderSize) {
      iov[n++] = {f->hdr + sent, kHeaderSize - sent};
      sent = 0;
    } else {
      sent -= static_cast<uint32_t>(kHeaderSize);
    }
    if (f->payload_len > sent) {
      iov[n++] = {const_cast<uint8_t*>(f->payload) + sent, f->payload_len - sent};
    }
  }
  return n;
}

// Accounts `written` bytes (what the write returned) to `fifo`, an
// IntrusiveQueue<Frame, &Frame::next> (common/intrusive_list.h): every frame
// now written completely is popped (before done runs) and handed to
// done(frame); a frame written in part keeps its progress in `sent`.
// REQUIRES: written <= the bytes GatherFrames listed.
template <typename Queue, typename Done>
void ConsumeFrames(Queue* fifo, size_t written, Done done) {
  while (!fifo->empty()) {
    auto* f = fifo->front();
    const size_t remaining = kHeaderSize + f->payload_len - f->sent;
    if (written < remaining) {
      f->sent += static_cast<uint32_t>(written);
      return;
    }
    written -= remaining;
    f->sent += static_cast<uint32_t>(remaining);
    fifo->PopFront();
    done(f);
  }
}

}  // namespace tandem::protocol

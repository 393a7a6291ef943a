// GatherFrames / ConsumeFrames: partial writes resume exactly where they
// stopped, across header and payload boundaries, and the iovec limit is kept.

#include "replica-engine/protocol/frame_tx.h"

#include <string>
#include <vector>

#include "common/intrusive_list.h"
#include "gtest/gtest.h"

namespace tandem::protocol {
namespace {

struct F {
  uint8_t hdr[kHeaderSize];
  const uint8_t* payload = nullptr;
  uint32_t payload_len = 0;
  uint32_t sent = 0;
  F* next = nullptr;
};

// Writes frames[0, count) as one FIFO through a "socket" that takes at most
// `chunk` bytes per call and returns what arrived, in order.
std::string Drain(F* frames, size_t count, size_t chunk, size_t max_iov, std::vector<F*>* done) {
  IntrusiveQueue<F, &F::next> fifo;
  for (size_t i = 0; i < count; ++i) fifo.PushBack(&frames[i]);
  std::string out;
  iovec iov[8];
  for (int guard = 0; !fifo.empty() && guard < 100000; ++guard) {
    const size_t n = GatherFrames(fifo.front(), iov, max_iov);
    EXPECT_LE(n, max_iov);
    size_t took = 0;
    for (size_t i = 0; i < n && took < chunk; ++i) {
      const size_t k = std::min(chunk - took, iov[i].iov_len);
      out.append(static_cast<const char*>(iov[i].iov_base), k);
      took += k;
    }
    ConsumeFrames(&fifo, took, [&](F* f) { done->push_back(f); });
  }
  EXPECT_TRUE(fifo.empty());
  return out;
}

TEST(FrameTxTest, PartialWritesResumeExactlyAcrossFrames) {
  std::string p1(1000, 'a'), p3(5, 'c');
  F f[3];
  std::string want;
  for (int i = 0; i < 3; ++i) {
    for (size_t b = 0; b < kHeaderSize; ++b) f[i].hdr[b] = static_cast<uint8_t>('A' + i);
    want.append(kHeaderSize, static_cast<char>('A' + i));
    if (i == 0) want += p1;
    if (i == 2) want += p3;
  }
  f[0].payload = reinterpret_cast<const uint8_t*>(p1.data());
  f[0].payload_len = static_cast<uint32_t>(p1.size());
  f[2].payload = reinterpret_cast<const uint8_t*>(p3.data());
  f[2].payload_len = static_cast<uint32_t>(p3.size());
  for (size_t chunk :
       {size_t{1}, size_t{7}, size_t{48}, size_t{49}, size_t{1048}, size_t{1 << 20}}) {
    for (size_t max_iov : {size_t{2}, size_t{3}, size_t{8}}) {
      for (F& x : f) x.sent = 0;
      std::vector<F*> done;
      EXPECT_EQ(Drain(f, 3, chunk, max_iov, &done), want)
          << "chunk " << chunk << " iov " << max_iov;
      ASSERT_EQ(done.size(), 3u);
      EXPECT_EQ(done[0], &f[0]);
      EXPECT_EQ(done[2], &f[2]);
      EXPECT_EQ(f[0].sent, kHeaderSize + p1.size());
    }
  }
}

}  // namespace
}  // namespace tandem::protocol

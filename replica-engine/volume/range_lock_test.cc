#include "replica-engine/volume/range_lock.h"

#include <vector>

#include "gtest/gtest.h"

namespace tandem::target {
namespace {

BlockRequest Req(BlockOp op, uint64_t offset, uint32_t length) {
  BlockRequest r;
  r.op = op;
  r.offset = offset;
  r.length = length;
  return r;
}

TEST(RangeLockTest, OverlappingWritesWaitForTheOneInItsDataPhase) {
  RangeLock lock;
  LockedRange first;
  lock.AddWrite(&first, 4096, 8192);  // [4 KiB, 12 KiB)
  BlockRequest overlapping = Req(BlockOp::kWrite, 8192, 4096);
  BlockRequest trim = Req(BlockOp::kTrim, 0, 8192);
  BlockRequest adjacent = Req(BlockOp::kWriteZeroes, 12288, 4096);
  BlockRequest read = Req(BlockOp::kRead, 4096, 4096);
  BlockRequest flush = Req(BlockOp::kFlush, 0, 0);
  EXPECT_TRUE(lock.MustWait(overlapping));
  EXPECT_TRUE(lock.MustWait(trim));
  EXPECT_FALSE(lock.MustWait(adjacent));
  EXPECT_FALSE(lock.MustWait(read));  // reads and flushes never wait
  EXPECT_FALSE(lock.MustWait(flush));
  EXPECT_TRUE(lock.RemoveWrite(&first));
  EXPECT_FALSE(lock.RemoveWrite(&first));  // a second removal is a no-op
  EXPECT_FALSE(lock.MustWait(overlapping));
}

TEST(RangeLockTest, ARebuildWindowHoldsWritesAndStartsOnlyWhenQuiet) {
  RangeLock lock;
  LockedRange write;
  lock.AddWrite(&write, 1 << 20, 4096);
  LockedRange window;
  window.offset = 1 << 20;
  window.length = 1 << 20;
  lock.LockWindow(&window);
  lock.LockWindow(&window);  // locking twice holds it once
  // The write that was already in flight keeps the window from copying...
  EXPECT_FALSE(lock.WindowQuiet(window));
  // ...and new writes to the window wait.
  BlockRequest late = Req(BlockOp::kWrite, (1 << 20) + 8192, 4096);
  EXPECT_TRUE(lock.MustWait(late));
  lock.RemoveWrite(&write);
  EXPECT_TRUE(lock.WindowQuiet(window));
  EXPECT_TRUE(lock.MustWait(late));  // until the copy is on the destination
  lock.UnlockWindow(&window);
  lock.UnlockWindow(&window);
  EXPECT_FALSE(lock.MustWait(late));
}

TEST(RangeLockTest, HeldRequestsGoBackInFrontOfTheQueueInTheirOrder) {
  RangeLock lock;
  BlockRequest a = Req(BlockOp::kWrite, 0, 4096);
  BlockRequest b = Req(BlockOp::kWrite, 0, 4096);
  BlockRequest queued = Req(BlockOp::kRead, 0, 4096);
  EXPECT_FALSE(lock.HasHeld());
  lock.Hold(&a);
  lock.Hold(&b);
  EXPECT_TRUE(lock.HasHeld());
  BlockRequestQueue queue;
  queue.PushBack(&queued);
  lock.ReleaseHeld(&queue);
  EXPECT_FALSE(lock.HasHeld());
  std::vector<BlockRequest*> order;
  while (BlockRequest* r = queue.PopFront()) order.push_back(r);
  EXPECT_EQ(order, (std::vector<BlockRequest*>{&a, &b, &queued}));
}

}  // namespace
}  // namespace tandem::target

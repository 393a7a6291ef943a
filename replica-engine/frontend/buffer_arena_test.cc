#include "replica-engine/frontend/buffer_arena.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace tandem::frontend {
namespace {

TEST(BufferArenaTest, AllocationsArePageAlignedAndDisjoint) {
  BufferArena arena;
  ASSERT_TRUE(arena.Init(1 << 20).ok());
  uint8_t* a = arena.Allocate(1);
  uint8_t* b = arena.Allocate(4096 * 3);
  uint8_t* c = arena.Allocate(5000);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(c, nullptr);
  for (uint8_t* p : {a, b, c}) EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
  EXPECT_GE(b, a + 4096);
  EXPECT_GE(c, b + 3 * 4096);
  EXPECT_EQ(arena.used_bytes(), (1 + 3 + 2) * 4096u);
}

TEST(BufferArenaTest, FullArenaReturnsNullUntilFreed) {
  BufferArena arena;
  ASSERT_TRUE(arena.Init(64 * 4096).ok());
  uint8_t* all = arena.Allocate(64 * 4096);
  ASSERT_NE(all, nullptr);
  EXPECT_EQ(arena.Allocate(1), nullptr);
  arena.Free(all, 64 * 4096);
  EXPECT_EQ(arena.used_bytes(), 0u);
  EXPECT_EQ(arena.Allocate(64 * 4096), all);
}

TEST(BufferArenaTest, FragmentedArenaFindsRunSpanningWords) {
  BufferArena arena;
  ASSERT_TRUE(arena.Init(256 * 4096).ok());
  std::vector<uint8_t*> pages;
  for (int i = 0; i < 256; ++i) pages.push_back(arena.Allocate(4096));
  ASSERT_EQ(arena.Allocate(1), nullptr);
  // Free every other page plus a run of 100 pages crossing word boundaries.
  for (int i = 0; i < 100; i += 2) arena.Free(pages[i], 4096);
  for (int i = 120; i < 220; ++i) arena.Free(pages[i], 4096);
  EXPECT_EQ(arena.Allocate(101 * 4096), nullptr);
  uint8_t* run = arena.Allocate(100 * 4096);
  EXPECT_EQ(run, pages[120]);
  // Single pages are found first-fit in the holes.
  EXPECT_EQ(arena.Allocate(4096), pages[0]);
}

TEST(BufferArenaTest, RequestLargerThanArenaFails) {
  BufferArena arena;
  ASSERT_TRUE(arena.Init(8 * 4096).ok());
  EXPECT_EQ(arena.Allocate(9 * 4096), nullptr);
  EXPECT_EQ(arena.Allocate(0), nullptr);
}

}  // namespace
}  // namespace tandem::frontend

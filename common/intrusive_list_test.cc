#include "common/intrusive_list.h"

#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

struct Item {
  int value = 0;
  Item* next = nullptr;
  ListHook<Item> hook;
};

using Queue = IntrusiveQueue<Item, &Item::next>;
using List = IntrusiveList<Item, &Item::hook>;

std::vector<int> Drain(Queue* q) {
  std::vector<int> out;
  while (Item* x = q->PopFront()) out.push_back(x->value);
  return out;
}

TEST(IntrusiveQueueTest, KeepsFifoOrderAndClearsLinksOnPop) {
  Item items[3] = {{1}, {2}, {3}};
  Queue q;
  EXPECT_TRUE(q.empty());
  for (Item& i : items) q.PushBack(&i);
  EXPECT_EQ(q.front(), &items[0]);
  Item* first = q.PopFront();
  EXPECT_EQ(first->next, nullptr);
  EXPECT_EQ(Drain(&q), (std::vector<int>{2, 3}));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.PopFront(), nullptr);
  q.PushBack(&items[2]);  // usable again once drained (tail was reset)
  EXPECT_EQ(Drain(&q), (std::vector<int>{3}));
}

TEST(IntrusiveQueueTest, PushFrontMakesAStackAndKeepsTheTail) {
  Item items[4] = {{1}, {2}, {3}, {4}};
  Queue q;
  for (int i = 0; i < 3; ++i) q.PushFront(&items[i]);
  EXPECT_EQ(q.PopFront()->value, 3);
  q.PushBack(&items[3]);  // the tail set by the first PushFront is still right
  EXPECT_EQ(Drain(&q), (std::vector<int>{2, 1, 4}));
}

TEST(IntrusiveQueueTest, SplicesMoveWholeQueuesInOrder) {
  Item a[2] = {{1}, {2}};
  Item b[2] = {{3}, {4}};
  Queue q, held;
  for (Item& i : a) q.PushBack(&i);
  for (Item& i : b) held.PushBack(&i);
  q.SpliceFront(&held);
  EXPECT_TRUE(held.empty());
  EXPECT_EQ(Drain(&q), (std::vector<int>{3, 4, 1, 2}));

  for (Item& i : a) q.PushBack(&i);
  for (Item& i : b) held.PushBack(&i);
  q.SpliceBack(&held);
  EXPECT_TRUE(held.empty());
  EXPECT_EQ(Drain(&q), (std::vector<int>{1, 2, 3, 4}));

  // Into an empty queue: the tail comes along.
  for (Item& i : b) held.PushBack(&i);
  q.SpliceFront(&held);
  q.PushBack(&a[0]);
  EXPECT_EQ(Drain(&q), (std::vector<int>{3, 4, 1}));
  q.SpliceBack(&held);  // empty `other`: nothing changes
  EXPECT_TRUE(q.empty());
}

TEST(IntrusiveListTest, RemovesAnyElementInConstantTimeAndTwiceIsHarmless) {
  Item items[4] = {{1}, {2}, {3}, {4}};
  List l;
  for (Item& i : items) l.PushFront(&i);
  auto values = [&l] {
    std::vector<int> out;
    for (Item* x = l.front(); x != nullptr; x = List::Next(x)) out.push_back(x->value);
    return out;
  };
  EXPECT_EQ(values(), (std::vector<int>{4, 3, 2, 1}));
  l.Remove(&items[1]);  // middle
  l.Remove(&items[3]);  // head
  l.Remove(&items[0]);  // tail
  l.Remove(&items[0]);  // not linked any more: no-op
  EXPECT_FALSE(List::Linked(&items[0]));
  EXPECT_TRUE(List::Linked(&items[2]));
  EXPECT_EQ(values(), (std::vector<int>{3}));
  l.Remove(&items[2]);
  EXPECT_TRUE(l.empty());
  l.PushFront(&items[0]);
  EXPECT_EQ(values(), (std::vector<int>{1}));
}

}  // namespace
}  // namespace tandem

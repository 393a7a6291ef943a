#pragma once
// Intrusive lists: the links live in the elements, so queueing allocates
// nothing (the data path keeps its requests in preallocated slots and moves
// them between queues; brief §3, style "no allocation per I/O").
//
// - IntrusiveQueue<T, &T::next>: a singly linked FIFO (PushBack/PopFront)
//   that is also usable as a stack (PushFront/PopFront); whole queues splice
//   in O(1).
// - IntrusiveList<T, &T::hook>: a doubly linked list with O(1) Remove of any
//   element, for sets that are searched and leave out of order.
//
// Contract: an element is in at most one list per link member at a time; the
// lists never own their elements (the caller keeps them alive while linked).
// Not thread-safe: each list belongs to one thread (its event loop).

namespace tandem {

template <typename T, T* T::*Next>
class IntrusiveQueue {
 public:
  IntrusiveQueue() = default;
  IntrusiveQueue(const IntrusiveQueue&) = delete;
  IntrusiveQueue& operator=(const IntrusiveQueue&) = delete;

  bool empty() const { return head_ == nullptr; }
  T* front() const { return head_; }

  void PushBack(T* x) {
    x->*Next = nullptr;
    if (tail_ != nullptr) {
      tail_->*Next = x;
    } else {
      head_ = x;
    }
    tail_ = x;
  }
  void PushFront(T* x) {
    x->*Next = head_;
    head_ = x;
    if (tail_ == nullptr) tail_ = x;
  }
  // nullptr when empty. The element's link is cleared.
  T* PopFront() {
    T* x = head_;
    if (x == nullptr) return nullptr;
    head_ = x->*Next;
    if (head_ == nullptr) tail_ = nullptr;
    x->*Next = nullptr;
    return x;
  }
  // Forgets every element (their links are left as they are): for an owner
  // that reclaims all of its elements at once, e.g. on a reset.
  void Clear() { head_ = tail_ = nullptr; }
  // Moves every element of `other` (in its order) in front of ours.
  void SpliceFront(IntrusiveQueue* other) {
    if (other->head_ == nullptr) return;
    other->tail_->*Next = head_;
    if (tail_ == nullptr) tail_ = other->tail_;
    head_ = other->head_;
    other->head_ = other->tail_ = nullptr;
  }
  // Moves every element of `other` (in its order) behind ours.
  void SpliceBack(IntrusiveQueue* other) {
    if (other->head_ == nullptr) return;
    if (tail_ != nullptr) {
      tail_->*Next = other->head_;
    } else {
      head_ = other->head_;
    }
    tail_ = other->tail_;
    other->head_ = other->tail_ = nullptr;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
};

// The links of one element in one IntrusiveList.
template <typename T>
struct ListHook {
  T* prev = nullptr;
  T* next = nullptr;
  bool linked = false;
};

template <typename T, ListHook<T> T::*Hook>
class IntrusiveList {
 public:
  IntrusiveList() = default;
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  bool empty() const { return head_ == nullptr; }
  T* front() const { return head_; }
  static T* Next(const T* x) { return (x->*Hook).next; }
  static bool Linked(const T* x) { return (x->*Hook).linked; }

  // REQUIRES: x is not linked.
  void PushFront(T* x) {
    ListHook<T>& h = x->*Hook;
    h.prev = nullptr;
    h.next = head_;
    if (head_ != nullptr) (head_->*Hook).prev = x;
    head_ = x;
    h.linked = true;
  }
  // No-op when x is not linked (callers may remove on every exit path).
  void Remove(T* x) {
    ListHook<T>& h = x->*Hook;
    if (!h.linked) return;
    if (h.prev != nullptr) {
      (h.prev->*Hook).next = h.next;
    } else {
      head_ = h.next;
    }
    if (h.next != nullptr) (h.next->*Hook).prev = h.prev;
    h.prev = h.next = nullptr;
    h.linked = false;
  }

 private:
  T* head_ = nullptr;
};

}  // namespace tandem

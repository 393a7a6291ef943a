#include "replica-engine/frontend/buffer_arena.h"

#include <sys/mman.h>

#include <cerrno>

namespace tandem::frontend {

BufferArena::~BufferArena() {
  if (base_ != nullptr) munmap(base_, pages_ * kPageSize);
}

Status BufferArena::Init(size_t bytes) {
  if (base_ != nullptr) return Status::FailedPrecondition("buffer arena already initialised");
  size_t pages = PagesFor(bytes);
  if (pages == 0) return Status::InvalidArgument("buffer arena of 0 bytes");
  void* p = mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return PosixError("mmap buffer arena", errno);
  base_ = static_cast<uint8_t*>(p);
  pages_ = pages;
  bits_.assign((pages + 63) / 64, 0);
  // Mark the tail of the last word used so the search never returns it.
  for (size_t i = pages; i < bits_.size() * 64; ++i) bits_[i / 64] |= 1ull << (i % 64);
  return Status::Ok();
}

void BufferArena::SetRange(size_t first, size_t n, bool used) {
  for (size_t i = first; i < first + n; ++i) {
    uint64_t bit = 1ull << (i % 64);
    if (used) {
      bits_[i / 64] |= bit;
    } else {
      bits_[i / 64] &= ~bit;
    }
  }
}

uint8_t* BufferArena::Allocate(size_t bytes) {
  size_t n = PagesFor(bytes);
  if (n == 0 || n > pages_ - used_pages_) return nullptr;
  // First fit. Whole words are skipped when full (all used) or counted in one
  // step when empty, so a scan costs about one step per word.
  size_t run_start = 0;
  size_t run = 0;
  for (size_t w = 0; w < bits_.size(); ++w) {
    uint64_t word = bits_[w];
    if (word == ~0ull) {
      run = 0;
      continue;
    }
    if (word == 0 && run + 64 < n) {
      if (run == 0) run_start = w * 64;
      run += 64;
      continue;
    }
    for (size_t b = 0; b < 64; ++b) {
      if ((word >> b) & 1) {
        run = 0;
        continue;
      }
      if (run == 0) run_start = w * 64 + b;
      if (++run == n) {
        SetRange(run_start, n, true);
        used_pages_ += n;
        return base_ + run_start * kPageSize;
      }
    }
  }
  return nullptr;
}

void BufferArena::Free(uint8_t* p, size_t bytes) {
  size_t n = PagesFor(bytes);
  size_t first = static_cast<size_t>(p - base_) / kPageSize;
  SetRange(first, n, false);
  used_pages_ -= n;
}

}  // namespace tandem::frontend

#pragma once
// MembershipAuthority: who may let a volume target acknowledge writes with
// fewer than a majority of its replicas (docs/architecture.md, "Who may
// acknowledge").
//
// By default a target acknowledges a write only when it is on every serving
// replica and those are a majority of the volume's configured replicas;
// majorities intersect, so the next attach (which must reach a majority) sees
// every acknowledged write. An authority — the controller, whose store records
// each volume's in-sync set — may shrink the in-sync set below a majority: the
// target asks it on a fault, before it acknowledges anything that skipped a
// replica, and the authority records the new set only if the target's epoch is
// still the volume's current one. A later attach is then told the in-sync set
// (TargetOptions::in_sync) and serves only from replicas that hold it.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::target {

class MembershipAuthority {
 public:
  virtual ~MembershipAuthority() = default;

  // Records `remaining` (replica ids) as the in-sync set of `volume_id` at
  // generation `new_generation_id`, if `epoch` is still the volume's current
  // epoch. `done` must run exactly once, on the calling target's EventLoop
  // thread (post to it), with:
  //   OK                  recorded: the target may acknowledge with `remaining`;
  //   FAILED_PRECONDITION a newer epoch owns the volume: the target fences;
  //   anything else       not recorded (unreachable, ...): writes keep waiting
  //                       and fail after the target's quorum bound.
  virtual void ShrinkInSync(const std::string& volume_id, uint64_t epoch,
                            const std::vector<std::string>& remaining, uint64_t new_generation_id,
                            std::function<void(Status)> done) = 0;
};

}  // namespace tandem::target

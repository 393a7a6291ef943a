#pragma once
// The engine's identity: a random 64-bit value kept in its data directory, so
// it survives restarts. TargetManager derives each target's HELLO owner id from
// it (attach::TargetIdFor): the same engine attaching the same volume at the
// same epoch again (after NodeUnstage, or after a crash and restart) is the
// same owner to the replicas, while a target on any other engine is not.

#include <cstdint>
#include <string>

#include "common/result.h"

namespace tandem::service {

// The file in the data directory. '@' is not allowed in volume ids, so it
// never collides with a replica's directory.
inline constexpr char kEngineIdentityFile[] = "@engine-identity";

// Reads <data_dir>/@engine-identity (16 hex digits), or creates it (0600,
// written atomically and fsync'd) with a fresh random non-zero value.
// Errors name the file: unreadable, malformed (never overwritten: a changed
// identity would lock this engine out of the epochs it holds), or not writable.
Result<uint64_t> LoadOrCreateEngineIdentity(const std::string& data_dir);

}  // namespace tandem::service

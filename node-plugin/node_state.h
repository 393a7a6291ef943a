#pragma once
// NodeState: what tandem-node staged, one small file per volume in its state
// directory, written atomically (temp file, fsync, rename, fsync of the
// directory). A restarted tandem-node reads it to find the loop device and
// mount of each volume again, and NodeUnstage finds what to undo even after a
// crash between the steps of a NodeStage.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::node {

struct StagedVolume {
  std::string volume_id;
  std::string staging_path;
  std::string export_path;  // the engine's file export ("" until attached)
  std::string device;       // "/dev/loopN" ("" until attached)
  std::string fs_type;      // "" for a raw block volume
  bool block = false;
  bool read_only = false;
  uint64_t epoch = 0;
};

// CSI ids become file names: only [A-Za-z0-9._-], 1..128 characters, not "." or "..".
Status ValidateVolumeId(const std::string& volume_id);

class NodeState {
 public:
  // `dir` is created (0700) if missing.
  static Result<NodeState> Open(const std::string& dir);

  Status Put(const StagedVolume& volume);
  Result<std::optional<StagedVolume>> Get(const std::string& volume_id) const;
  Result<std::vector<StagedVolume>> List() const;
  Status Remove(const std::string& volume_id);  // OK when absent

 private:
  explicit NodeState(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(const std::string& volume_id) const;
  std::string dir_;
};

}  // namespace tandem::node

#pragma once
// VolumeParams: the StorageClass parameters of a Tandem volume, and the
// capacity rule. Pure functions, unit-tested (volume_params_test.cc).
//
//   replicas     "1".."5"                (default "3")
//   fsType       "ext4" | "xfs"          (default "ext4")
//   thin         "true" | "false"        (default "true")
//   rebuildRate  bytes/s, K/M/G suffixes; "0" (engine default) or >= 1M
//
// Keys starting with "csi.storage.k8s.io/" are the external-provisioner's
// (--extra-create-metadata: PVC name/namespace, PV name) and are accepted and
// ignored. Any other key is INVALID_ARGUMENT naming it: a typo in a
// StorageClass must not silently give a 1-replica volume.

#include <cstdint>
#include <map>
#include <string>

#include <google/protobuf/map.h>

#include "common/result.h"

namespace tandem::controller {

inline constexpr uint64_t kBlockSize = 4096;
// Size of a volume whose CreateVolume gives no capacity range.
inline constexpr uint64_t kDefaultVolumeBytes = 1ull << 30;
// The engine's replica metadata bound (engine.proto CreateReplicaRequest):
// about 31.5 TiB; 31 TiB leaves room.
inline constexpr uint64_t kMaxVolumeBytes = 31ull << 40;
inline constexpr uint32_t kMaxReplicas = 5;

struct VolumeParams {
  uint32_t replicas = 3;
  std::string fs_type = "ext4";
  bool thin = true;
  uint64_t rebuild_rate_bytes_per_sec = 0;
};

using ParamMap = google::protobuf::Map<std::string, std::string>;

// Parses CreateVolumeRequest.parameters (field name "parameters").
Result<VolumeParams> ParseVolumeParams(const ParamMap& params);

// The mutable parameters ControllerModifyVolume accepts: replicas and
// rebuildRate. Fields not given keep `current`'s values.
Result<VolumeParams> ParseMutableParams(const ParamMap& params, const VolumeParams& current);

// What a CreateVolume asks for: its `parameters`, then its
// `mutable_parameters` (a VolumeAttributesClass at creation) over them.
Result<VolumeParams> ParseCreateParams(const ParamMap& parameters,
                                       const ParamMap& mutable_parameters);

// The size of a volume for CreateVolumeRequest.capacity_range: required_bytes
// rounded up to the block size (kDefaultVolumeBytes when neither bound is
// set; the largest block multiple <= limit_bytes when only the limit is).
// INVALID_ARGUMENT for negative values; OUT_OF_RANGE when the rounded size
// exceeds limit_bytes or kMaxVolumeBytes.
Result<uint64_t> VolumeSizeFor(int64_t required_bytes, int64_t limit_bytes);

// Whether a volume of `size` satisfies a capacity range (0 bounds: none).
bool SizeSatisfies(uint64_t size, int64_t required_bytes, int64_t limit_bytes);

}  // namespace tandem::controller

#include "controller/volume_params.h"

#include "common/flags.h"

namespace tandem::controller {

namespace {

constexpr char kProvisionerPrefix[] = "csi.storage.k8s.io/";

Status ParseReplicas(const std::string& value, uint32_t* out) {
  if (value.size() != 1 || value[0] < '1' || value[0] > '0' + static_cast<int>(kMaxReplicas)) {
    return Status::InvalidArgument("parameters.replicas must be 1..5, got \"" + value + "\"");
  }
  *out = static_cast<uint32_t>(value[0] - '0');
  return Status::Ok();
}

Status ParseRebuildRate(const std::string& field, const std::string& value, uint64_t* out) {
  uint64_t rate = 0;
  if (!ParseSize(value, &rate).ok()) {
    return Status::InvalidArgument(field + " must be bytes per second (K/M/G suffixes), got \"" +
                                   value + "\"");
  }
  // The engine's floor (engine.proto CreateTargetRequest): a rate below
  // 1 MiB/s would stretch a rebuild over days.
  if (rate != 0 && rate < (1u << 20)) {
    return Status::InvalidArgument(field + " must be 0 (engine default) or at least 1M, got \"" +
                                   value + "\"");
  }
  *out = rate;
  return Status::Ok();
}

}  // namespace

Result<VolumeParams> ParseVolumeParams(const ParamMap& params) {
  VolumeParams p;
  for (const auto& [key, value] : params) {
    if (key == "replicas") {
      TANDEM_RETURN_IF_ERROR(ParseReplicas(value, &p.replicas));
    } else if (key == "fsType") {
      if (value != "ext4" && value != "xfs") {
        return Status::InvalidArgument("parameters.fsType must be ext4 or xfs, got \"" + value +
                                       "\"");
      }
      p.fs_type = value;
    } else if (key == "thin") {
      if (value != "true" && value != "false") {
        return Status::InvalidArgument("parameters.thin must be true or false, got \"" + value +
                                       "\"");
      }
      p.thin = value == "true";
    } else if (key == "rebuildRate") {
      TANDEM_RETURN_IF_ERROR(
          ParseRebuildRate("parameters.rebuildRate", value, &p.rebuild_rate_bytes_per_sec));
    } else if (key.rfind(kProvisionerPrefix, 0) == 0) {
      continue;
    } else {
      return Status::InvalidArgument("parameters." + key +
                                     " is not a Tandem parameter (replicas, fsType, thin, "
                                     "rebuildRate)");
    }
  }
  return p;
}

Result<VolumeParams> ParseCreateParams(const ParamMap& parameters,
                                       const ParamMap& mutable_parameters) {
  TANDEM_ASSIGN_OR_RETURN(VolumeParams p, ParseVolumeParams(parameters));
  if (mutable_parameters.empty()) return p;
  return ParseMutableParams(mutable_parameters, p);
}

Result<VolumeParams> ParseMutableParams(const ParamMap& params, const VolumeParams& current) {
  VolumeParams p = current;
  for (const auto& [key, value] : params) {
    if (key == "replicas") {
      TANDEM_RETURN_IF_ERROR(ParseReplicas(value, &p.replicas));
    } else if (key == "rebuildRate") {
      TANDEM_RETURN_IF_ERROR(
          ParseRebuildRate("mutable_parameters.rebuildRate", value, &p.rebuild_rate_bytes_per_sec));
    } else {
      return Status::InvalidArgument("mutable_parameters." + key +
                                     " cannot be modified (replicas, rebuildRate)");
    }
  }
  return p;
}

Result<uint64_t> VolumeSizeFor(int64_t required_bytes, int64_t limit_bytes) {
  if (required_bytes < 0) {
    return Status::InvalidArgument("capacity_range.required_bytes must not be negative");
  }
  if (limit_bytes < 0) {
    return Status::InvalidArgument("capacity_range.limit_bytes must not be negative");
  }
  if (limit_bytes > 0 && required_bytes > limit_bytes) {
    return Status::InvalidArgument("capacity_range.required_bytes " +
                                   std::to_string(required_bytes) + " exceeds limit_bytes " +
                                   std::to_string(limit_bytes));
  }
  uint64_t size;
  if (required_bytes > 0) {
    uint64_t req = static_cast<uint64_t>(required_bytes);
    size = (req + kBlockSize - 1) / kBlockSize * kBlockSize;
  } else if (limit_bytes > 0) {
    uint64_t lim = static_cast<uint64_t>(limit_bytes);
    size = std::min<uint64_t>(kDefaultVolumeBytes, lim / kBlockSize * kBlockSize);
  } else {
    size = kDefaultVolumeBytes;
  }
  if (limit_bytes > 0 && size > static_cast<uint64_t>(limit_bytes)) {
    return Status::OutOfRange("capacity_range: no multiple of the 4096-byte block size lies in [" +
                              std::to_string(required_bytes) + ", " + std::to_string(limit_bytes) +
                              "]");
  }
  if (size == 0) {
    return Status::OutOfRange("capacity_range.limit_bytes " + std::to_string(limit_bytes) +
                              " is below the 4096-byte block size");
  }
  if (size > kMaxVolumeBytes) {
    return Status::OutOfRange("capacity_range: " + std::to_string(size) +
                              " bytes exceeds the largest Tandem volume (" +
                              std::to_string(kMaxVolumeBytes) + " bytes)");
  }
  return size;
}

bool SizeSatisfies(uint64_t size, int64_t required_bytes, int64_t limit_bytes) {
  if (required_bytes > 0 && size < static_cast<uint64_t>(required_bytes)) return false;
  if (limit_bytes > 0 && size > static_cast<uint64_t>(limit_bytes)) return false;
  return true;
}

}  // namespace tandem::controller

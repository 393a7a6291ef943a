#include "csi/validation.h"

namespace tandem::csi {

using v1::VolumeCapability;

Status RequireField(std::string_view field, const std::string& value) {
  if (!value.empty()) return Status::Ok();
  return Status::InvalidArgument(std::string(field) + " missing in request");
}

Status RequirePresent(std::string_view field, bool present) {
  if (present) return Status::Ok();
  return Status::InvalidArgument(std::string(field) + " missing in request");
}

Status CheckCapabilityShape(std::string_view field, const VolumeCapability& cap) {
  std::string f(field);
  if (cap.access_type_case() == VolumeCapability::ACCESS_TYPE_NOT_SET) {
    return Status::InvalidArgument(f + ".access_type (block or mount) missing in request");
  }
  if (!cap.has_access_mode()) {
    return Status::InvalidArgument(f + ".access_mode missing in request");
  }
  if (cap.access_mode().mode() == VolumeCapability::AccessMode::UNKNOWN) {
    return Status::InvalidArgument(f + ".access_mode.mode is UNKNOWN");
  }
  return Status::Ok();
}

Status CheckCapabilitiesShape(std::string_view field,
                              const google::protobuf::RepeatedPtrField<VolumeCapability>& caps) {
  if (caps.empty()) return Status::InvalidArgument(std::string(field) + " missing in request");
  for (int i = 0; i < caps.size(); ++i) {
    TANDEM_RETURN_IF_ERROR(
        CheckCapabilityShape(std::string(field) + "[" + std::to_string(i) + "]", caps[i]));
  }
  return Status::Ok();
}

bool IsSingleNodeMode(VolumeCapability::AccessMode::Mode mode) {
  switch (mode) {
    case VolumeCapability::AccessMode::SINGLE_NODE_WRITER:
    case VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY:
    case VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER:
    case VolumeCapability::AccessMode::SINGLE_NODE_MULTI_WRITER:
      return true;
    default:
      return false;
  }
}

bool IsReadOnlyMode(VolumeCapability::AccessMode::Mode mode) {
  return mode == VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY ||
         mode == VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY;
}

std::string UnsupportedCapabilityReason(std::string_view field, const VolumeCapability& cap) {
  std::string f(field);
  auto mode = cap.access_mode().mode();
  if (!IsSingleNodeMode(mode)) {
    // One volume target serves a volume, on one node: the fencing epochs
    // exist precisely so that two nodes never write it together.
    return f + ".access_mode " + VolumeCapability::AccessMode::Mode_Name(mode) +
           " is not supported: Tandem volumes are published to one node at a time";
  }
  if (cap.has_mount()) {
    const std::string& fs = cap.mount().fs_type();
    if (!fs.empty() && fs != "ext4" && fs != "xfs") {
      return f + ".mount.fs_type \"" + fs + "\" is not supported (ext4 or xfs)";
    }
  }
  return "";
}

}  // namespace tandem::csi

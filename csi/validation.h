#pragma once
// Argument checks shared by the CSI services. Every failure is
// INVALID_ARGUMENT whose message names the request field, so an operator
// reading the CO's event sees which field of which call was wrong
// (csi-driver-host-path's "Name missing in request").
//
// Two layers, as the spec separates them:
//   - shape (CheckCapabilityShape): a capability without an access type or
//     access mode is malformed -> INVALID_ARGUMENT;
//   - support (UnsupportedCapabilityReason): a well-formed capability the
//     plugin does not offer (a multi-node mode, an unknown fs type) is a
//     reason string; CreateVolume turns it into INVALID_ARGUMENT,
//     ValidateVolumeCapabilities into an unconfirmed answer.

#include <string>
#include <string_view>

#include <google/protobuf/repeated_ptr_field.h>

#include "common/status.h"
#include "csi/csi.pb.h"

namespace tandem::csi {

// The generated CSI types (package csi.v1).
namespace v1 = ::csi::v1;

// INVALID_ARGUMENT "<field> missing in request" when `value` is empty.
Status RequireField(std::string_view field, const std::string& value);
// The same for a message field: `present` is has_<field>().
Status RequirePresent(std::string_view field, bool present);

// `field` names the capability in the request ("volume_capability",
// "volume_capabilities[2]").
Status CheckCapabilityShape(std::string_view field, const v1::VolumeCapability& cap);
// CheckCapabilityShape of each, and at least one ("<field> missing in request").
Status CheckCapabilitiesShape(std::string_view field,
                              const google::protobuf::RepeatedPtrField<v1::VolumeCapability>& caps);

// What Tandem volumes support: block or mount access with fs_type "" (the
// volume's own), "ext4" or "xfs", by one node at a time (SINGLE_NODE_*
// modes; a replicated block device has one target, on one node). Empty when
// `cap` is supported, else why not (naming `field`).
// REQUIRES: CheckCapabilityShape(field, cap).ok()
std::string UnsupportedCapabilityReason(std::string_view field, const v1::VolumeCapability& cap);

// Whether the mode lets only one node publish the volume.
bool IsSingleNodeMode(v1::VolumeCapability::AccessMode::Mode mode);
// Whether the mode is read-only.
bool IsReadOnlyMode(v1::VolumeCapability::AccessMode::Mode mode);

}  // namespace tandem::csi

#pragma once
// AttachmentContext: the publish_context (csi/publish_context.h) of a
// volume's attachment, built from its record as it is now. ControllerPublish
// answers it, and Registration.GetAttachment answers it again later, so a
// node that restages under one publish builds its target from the replica set
// the record holds then (after a ModifyVolume `replicas` or a reconciler
// replacement), not from the one of the publish (docs/controller.md).

#include "common/result.h"
#include "controller/node_registry.h"
#include "controller/records.h"
#include "csi/publish_context.h"

namespace tandem::controller {

// REQUIRES: record.has_attachment(). The epoch is the attachment's; each
// replica's data address comes from its node's last heartbeat (the registry
// is polled once when a node has not reported one since this controller
// started). UNAVAILABLE when a replica's node has no known data address.
// The context carries the volume's secret: callers that hand it to anyone
// but kubelet's publish path clear it.
Result<csi::PublishContext> AttachmentContext(const rec::VolumeRecord& record, NodeRegistry* nodes);

}  // namespace tandem::controller

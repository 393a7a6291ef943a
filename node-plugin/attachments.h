#pragma once
// Attachments: where NodeStageVolume learns a volume's current replica set.
//
// kubelet hands NodeStage the publish_context of the ControllerPublish, which
// a later ModifyVolume `replicas` or a reconciler replacement does not update.
// A target built from it on a restage (NodeUnstage + NodeStage under one
// publish, a node reboot) could count a replica the record no longer holds,
// or miss one it gained. So tandem-node asks the controller for the context
// of the attachment as the record says now (Registration.GetAttachment,
// controller/proto/registration.proto) and builds the target from that
// (docs/node_plugin.md "The current replica set").

#include <chrono>
#include <memory>
#include <string>

#include "common/result.h"
#include "csi/publish_context.h"

namespace tandem::node {

class Attachments {
 public:
  virtual ~Attachments() = default;
  // The current context of `volume_id`'s attachment to this node, without
  // the volume's secret. The controller's codes: NOT_FOUND (volume gone),
  // FAILED_PRECONDITION (not published here), ABORTED (a change of the
  // volume runs), UNAVAILABLE / DEADLINE_EXCEEDED (not reached).
  virtual Result<csi::PublishContext> Current(const std::string& volume_id) = 0;
  // Where it asks, for messages.
  virtual std::string where() const = 0;
};

// Attachments over the controller's Registration API.
class ControllerAttachments : public Attachments {
 public:
  ControllerAttachments(std::string controller_endpoint, std::string node_id,
                        std::chrono::milliseconds timeout);
  ~ControllerAttachments() override;
  Result<csi::PublishContext> Current(const std::string& volume_id) override;
  std::string where() const override { return "tandem-controller at " + endpoint_; }

 private:
  struct Stub;
  std::string endpoint_;
  std::string node_id_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Stub> stub_;
};

}  // namespace tandem::node

#include "node-plugin/attachments.h"

#include <grpcpp/client_context.h>

#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_status.h"
#include "controller/proto/registration.grpc.pb.h"

namespace tandem::node {

struct ControllerAttachments::Stub {
  std::unique_ptr<controller::v1::Registration::Stub> stub;
};

ControllerAttachments::ControllerAttachments(std::string controller_endpoint, std::string node_id,
                                             std::chrono::milliseconds timeout)
    : endpoint_(std::move(controller_endpoint)),
      node_id_(std::move(node_id)),
      timeout_(timeout),
      stub_(std::make_unique<Stub>(
          Stub{controller::v1::Registration::NewStub(rpc::NewClientChannel(endpoint_))})) {}

ControllerAttachments::~ControllerAttachments() = default;

Result<csi::PublishContext> ControllerAttachments::Current(const std::string& volume_id) {
  controller::v1::GetAttachmentRequest req;
  req.set_volume_id(volume_id);
  req.set_node_id(node_id_);
  controller::v1::GetAttachmentResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  TANDEM_RETURN_IF_ERROR(rpc::FromGrpcStatus(stub_->stub->GetAttachment(&ctx, req, &resp)));
  return csi::DecodePublishContext(resp.publish_context());
}

}  // namespace tandem::node

#include "common/grpc/client_channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "common/grpc/endpoint.h"

namespace tandem::rpc {

std::shared_ptr<grpc::Channel> NewClientChannel(const std::string& endpoint) {
  Result<Endpoint> parsed = ParseEndpoint(endpoint);
  const std::string target = parsed.ok() ? parsed->GrpcAddress() : endpoint;
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

}  // namespace tandem::rpc

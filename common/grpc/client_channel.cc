#include "common/grpc/client_channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "common/grpc/endpoint.h"

namespace tandem::rpc {

namespace {

std::string Target(const std::string& endpoint) {
  Result<Endpoint> parsed = ParseEndpoint(endpoint);
  return parsed.ok() ? parsed->GrpcAddress() : endpoint;
}

}  // namespace

std::shared_ptr<grpc::Channel> NewClientChannel(const std::string& endpoint) {
  return grpc::CreateChannel(Target(endpoint), grpc::InsecureChannelCredentials());
}

Result<std::shared_ptr<grpc::Channel>> NewClientChannel(const std::string& endpoint,
                                                        const TlsConfig& tls) {
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                          NewChannelCredentials(tls));
  return grpc::CreateChannel(Target(endpoint), credentials);
}

}  // namespace tandem::rpc

#include "common/grpc/bearer_auth.h"

namespace tandem::rpc {
namespace {

constexpr char kAuthorization[] = "authorization";
constexpr std::string_view kBearer = "Bearer ";

}  // namespace

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

Status BearerTokenAuth::Check(const grpc::ServerContext& ctx) const {
  if (token_.empty()) return Status::Ok();
  const auto& md = ctx.client_metadata();
  auto it = md.find(kAuthorization);
  if (it == md.end()) return Status::Unauthenticated("missing authorization metadata");
  std::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kBearer.size()) != kBearer ||
      !ConstantTimeEqual(value.substr(kBearer.size()), token_)) {
    return Status::Unauthenticated("bad token");
  }
  return Status::Ok();
}

void AddBearerToken(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata(kAuthorization, std::string(kBearer) + token);
}

}  // namespace tandem::rpc

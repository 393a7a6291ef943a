#include "common/grpc/tls.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

namespace tandem::rpc {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

// The PEM file's contents; errors name the file, never its contents.
Result<std::string> ReadPem(const char* what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument(std::string(what) + " " + path + " cannot be read");
  std::ostringstream out;
  out << in.rdbuf();
  std::string pem = out.str();
  if (pem.empty() || pem.size() > kMaxPemBytes) {
    return Status::InvalidArgument(std::string(what) + " " + path +
                                   " is empty or larger than 1 MiB");
  }
  return pem;
}

Status CheckPair(const TlsConfig& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return Status::InvalidArgument("TLS needs both a certificate and its key file (got only " +
                                   std::string(tls.cert_file.empty() ? "the key" : "the cert") +
                                   ")");
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<grpc::ServerCredentials>> NewServerCredentials(const TlsConfig& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  TANDEM_RETURN_IF_ERROR(CheckPair(tls));
  if (tls.cert_file.empty()) {
    return Status::InvalidArgument("a TLS server needs a certificate and key file");
  }
  grpc::SslServerCredentialsOptions options(
      tls.ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  TANDEM_ASSIGN_OR_RETURN(pair.private_key, ReadPem("TLS key file", tls.key_file));
  TANDEM_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("TLS cert file", tls.cert_file));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.ca_file.empty()) {
    TANDEM_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("TLS CA file", tls.ca_file));
  }
  return grpc::SslServerCredentials(options);
}

Result<std::shared_ptr<grpc::ChannelCredentials>> NewChannelCredentials(const TlsConfig& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  TANDEM_RETURN_IF_ERROR(CheckPair(tls));
  grpc::SslCredentialsOptions options;
  if (!tls.ca_file.empty()) {
    TANDEM_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("TLS CA file", tls.ca_file));
  }
  if (!tls.cert_file.empty()) {
    TANDEM_ASSIGN_OR_RETURN(options.pem_private_key, ReadPem("TLS key file", tls.key_file));
    TANDEM_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem("TLS cert file", tls.cert_file));
  }
  return grpc::SslCredentials(options);
}

}  // namespace tandem::rpc

#pragma once
// TLS for our gRPC servers and clients, from PEM files: server-side TLS, and
// mutual TLS when the server is given a CA to verify clients with. Over TCP
// between nodes (the controller calling engines) this keeps the bearer token
// and the requests off the wire in clear; with mTLS only holders of a
// certificate from the cluster's CA can even reach a handler.
//
//   rpc::TlsConfig tls{.cert_file = "/etc/tandem/tls/engine.crt",
//                      .key_file = "/etc/tandem/tls/engine.key",
//                      .ca_file = "/etc/tandem/tls/ca.crt"};   // clients must show a cert
//   GrpcServer::Start({.endpoint = "0.0.0.0:9600", .services = {&svc}, .tls = tls});
//   auto channel = rpc::NewClientChannel("tcp://10.0.0.5:9600",
//                                        {.cert_file = ..., .key_file = ..., .ca_file = ...});
//
// The server's certificate must name the address clients dial (a SAN
// IP:10.0.0.5 or DNS name); gRPC checks it against the target.

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "common/result.h"

namespace tandem::rpc {

struct TlsConfig {
  // PEM certificate chain and private key of this side. A server needs
  // both; a client sends them when the server asks (mTLS).
  std::string cert_file;
  std::string key_file;
  // PEM CA bundle. Server: clients must present a certificate it signed
  // (mutual TLS); empty: any client may connect (TLS without client certs).
  // Client: verifies the server's certificate; empty: the system roots.
  std::string ca_file;

  // Whether any TLS file is set; otherwise the connection is plaintext.
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// Plaintext credentials when !tls.enabled(). INVALID_ARGUMENT naming the
// file when one cannot be read, is empty or larger than 1 MiB, or when only
// one of cert_file / key_file is given (a server: when either is missing).
Result<std::shared_ptr<grpc::ServerCredentials>> NewServerCredentials(const TlsConfig& tls);
Result<std::shared_ptr<grpc::ChannelCredentials>> NewChannelCredentials(const TlsConfig& tls);

}  // namespace tandem::rpc

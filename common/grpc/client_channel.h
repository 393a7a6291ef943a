#pragma once
// A client channel to an endpoint in our grammar (endpoint.h: "unix:///abs",
// "unix://rel", "tcp://HOST:PORT", "HOST:PORT", ...), which gRPC's own
// target syntax does not fully share ("tcp://" and "unix://rel").
//
// Plaintext, or TLS (tls.h) as the server is configured; the bearer token
// goes per call (bearer_auth.h). No connection is made until
// the first call; a call to an endpoint nobody serves fails UNAVAILABLE.

#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include "common/grpc/tls.h"
#include "common/result.h"

namespace tandem::rpc {

// A text that is not a valid endpoint is handed to gRPC as it is (its calls
// then fail UNAVAILABLE), so a client never fails to construct.
std::shared_ptr<grpc::Channel> NewClientChannel(const std::string& endpoint);

// The same over TLS (tls.h) when tls.enabled(); INVALID_ARGUMENT when its
// files are unusable.
Result<std::shared_ptr<grpc::Channel>> NewClientChannel(const std::string& endpoint,
                                                        const TlsConfig& tls);

}  // namespace tandem::rpc

#pragma once
// Network address text: TCP ports and "HOST:PORT", parsed strictly (a typo
// in a daemon's address must fail, not bind somewhere else). Shared by the
// flag parsers, the gRPC endpoints (common/grpc/endpoint.h) and the engine
// API's replica endpoints.

#include <cstdint>
#include <string>

#include "common/status.h"

namespace tandem {

// Parses a TCP port: plain decimal digits (no suffix, sign or white space) of
// a value in 1..65535, or 0..65535 when `allow_zero` (0: "any port").
// INVALID_ARGUMENT saying what is allowed otherwise.
Status ParsePort(const std::string& text, bool allow_zero, uint16_t* out);

// Parses "HOST:PORT" (split at the last ':'; HOST may be empty) with PORT as
// ParsePort. INVALID_ARGUMENT naming `what` (e.g. "--listen") otherwise.
Status ParseHostPort(const std::string& what, const std::string& text, bool allow_zero_port,
                     std::string* host, uint16_t* port);

}  // namespace tandem

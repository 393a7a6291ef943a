#pragma once
// Secure defaults of tandem-engine (issue 10, docs/security.md): what an
// engine without tokens may bind, which paths CreateReplica may use as a
// replica's storage, and where CreateTarget may export NBD over TCP.
//
// Every check is a pure function of its arguments and the file system, so
// engine_main (flags, exit 2) and EngineService (requests) share them.

#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::service {

// Whether `host` names this machine's loopback interface only: "localhost",
// an IPv4 address in 127.0.0.0/8 ("127.0.0.1", dotted quad), or "::1" (also
// bracketed, "[::1]"). Anything else, a host name or 0.0.0.0 included, is
// not: a name may resolve to any interface.
bool IsLoopbackHost(const std::string& host);

// Whether a listening address may be bound: a unix socket ("unix:...") or a
// loopback HOST:PORT always; any other HOST:PORT only when `token_set` (the
// port's own token is configured) or `insecure_bind`. Else INVALID_ARGUMENT
// naming `flag`, the address, `token_flag` and --insecure-bind. `address`
// has been parsed already (HOST:PORT or unix:...); its host is the text
// before the last ':'.
Status CheckBindAddress(const std::string& flag, const std::string& address, bool token_set,
                        const std::string& token_flag, bool insecure_bind);

// The one line ("WARNING: unprotected: ...") an engine logs at start when a
// token is missing, naming each unprotected endpoint and its flag; empty
// when both are set.
std::string UnprotectedWarning(bool auth_token_set, const std::string& data_address,
                               bool mgmt_token_set, const std::string& grpc_address);

// Whether CreateReplica may use `data_path` (non-empty) as a replica's
// storage. Symlinks and ".." are resolved (realpath) first; the resolved
// path must be
//   - a path strictly under the resolved `data_dir`, and not inside a
//     replica's directory there (a directory holding a "meta" file, or the
//     directory of `volume_id` itself): a replica's data or metadata file is
//     never another replica's storage; or
//   - the resolved path of one of `allowed_devices` (each resolved now too,
//     so a /dev/disk/by-id link that moved is followed).
// PERMISSION_DENIED naming data_path (and --allowed-device) otherwise;
// INVALID_ARGUMENT naming data_path when it cannot be resolved (missing).
Status CheckDataPath(const std::string& data_path, const std::string& volume_id,
                     const std::string& data_dir, const std::vector<std::string>& allowed_devices);

// Whether CreateTarget may export NBD over TCP on `address` ("IPV4:PORT",
// already validated): loopback always, any other address only when
// `allow_remote` (tandem-engine --allow-remote-nbd). PERMISSION_DENIED
// naming nbd_tcp_address and the flag otherwise.
Status CheckNbdTcpAddress(const std::string& address, bool allow_remote);

}  // namespace tandem::service

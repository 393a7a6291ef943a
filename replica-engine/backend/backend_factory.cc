#include "replica-engine/backend/backend_factory.h"

#include <string>

#include "common/logging.h"

namespace tandem::backend {

Result<std::unique_ptr<StorageBackend>> BackendFactory::Create(std::string_view name,
                                                               const BackendOptions& options) {
  if (name == "io_uring") return NewUringBackend(options);
  if (name == "libaio") return NewAioBackend(options);
  if (name == "auto") {
    // Creating a real ring is the only reliable probe: seccomp filters and
    // kernel.io_uring_disabled are invisible to a version check.
    auto uring = NewUringBackend(options);
    if (uring.ok()) return uring;
    TLOG_WARN("backend", "io_uring unavailable (%s), falling back to libaio",
              uring.status().message().c_str());
    return NewAioBackend(options);
  }
  return Status::InvalidArgument("unknown storage backend '" + std::string(name) +
                                 "' (want io_uring, libaio or auto)");
}

}  // namespace tandem::backend

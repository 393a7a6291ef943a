#pragma once
// Creates a StorageBackend by name: "io_uring", "libaio" or "auto".
//
// "auto" really creates a ring (not only checks the kernel version) and falls
// back to libaio when io_uring_setup fails (EPERM from seccomp or
// kernel.io_uring_disabled, ENOSYS on old kernels), logging one WARNING line
// naming the reason: "io_uring unavailable (<reason>), falling back to libaio".
// TANDEM_DISABLE_IO_URING=1 in the environment makes io_uring_setup count as
// failed with EPERM (the seccomp / sysctl shape), so the fallback can be tested
// and forced without privileges.

#include <memory>
#include <string_view>

#include "common/result.h"
#include "replica-engine/backend/storage_backend.h"

namespace tandem::backend {

class BackendFactory {
 public:
  // INVALID_ARGUMENT for an unknown name; UNAVAILABLE (with the errno text) when
  // the named backend cannot be created.
  static Result<std::unique_ptr<StorageBackend>> Create(std::string_view name,
                                                        const BackendOptions& options = {});
};

// Direct constructors, for tests and the factory.
Result<std::unique_ptr<StorageBackend>> NewUringBackend(const BackendOptions& options);
Result<std::unique_ptr<StorageBackend>> NewAioBackend(const BackendOptions& options);

}  // namespace tandem::backend

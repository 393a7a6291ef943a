// OpenStore: picks the backend from the uri scheme.

#include <string>

#include "controller/store/metadata_store.h"

namespace tandem::store {

Result<std::unique_ptr<MetadataStore>> OpenStore(std::string_view uri,
                                                 const StoreOptions& options) {
  (void)options;
  if (uri.starts_with("sqlite://") || uri.starts_with("etcd://")) {
    return Status::Unimplemented("metadata store backends are being built (issue 13): " +
                                 std::string(uri));
  }
  return Status::InvalidArgument("store uri must be sqlite:///dir or etcd://host:port[,...]: " +
                                 std::string(uri));
}

}  // namespace tandem::store

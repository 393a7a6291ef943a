#pragma once
// Records: the controller's typed view of the metadata store.
//
// Key layout (all under "/tandem/"):
//   /tandem/volumes/<volume_id>        VolumeRecord (records.proto, binary)
//   /tandem/volume-names/<csi name>    the volume_id (the idempotency index)
//   /tandem/nodes/<node_id>            NodeRecord
// A volume's two keys are written and deleted together in one Txn, so the
// name index never points at a missing volume or the other way round.
//
// Every write is a compare-and-swap on the record's mod_revision (or on the
// key's absence) and requires this instance to lead (store::TxnRequest::
// require_leader): a controller that lost the election can never write. A
// compare that fails is ABORTED ("changed concurrently; retry"), which the
// CSI handlers return unchanged (the CO retries).
//
// Thread-safety: as MetadataStore (any thread, concurrently).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/proto/records.pb.h"
#include "controller/store/metadata_store.h"

namespace tandem::controller {

namespace rec = ::tandem::controller::records::v1;

template <typename T>
struct Versioned {
  T record;
  int64_t mod_revision = 0;
};

std::string VolumeKey(const std::string& volume_id);
std::string VolumeNameKey(const std::string& name);
std::string NodeKey(const std::string& node_id);

class Records {
 public:
  explicit Records(store::MetadataStore* store) : store_(store) {}

  store::MetadataStore* store() const { return store_; }

  Result<std::optional<Versioned<rec::VolumeRecord>>> GetVolume(const std::string& volume_id);
  // The volume id recorded for a CSI name, or nullopt.
  Result<std::optional<std::string>> GetVolumeIdByName(const std::string& name);
  // Creates the record and its name index. ABORTED when either exists.
  Result<int64_t> CreateVolume(const rec::VolumeRecord& record);
  // Replaces the record if it is still at `mod_revision`; the new revision.
  Result<int64_t> UpdateVolume(const rec::VolumeRecord& record, int64_t mod_revision);
  // Deletes the record and its name index if still at `mod_revision`.
  Status DeleteVolume(const rec::VolumeRecord& record, int64_t mod_revision);
  // Volumes with ids after `start_after`, ascending, at most `limit` (0: all).
  Result<std::vector<Versioned<rec::VolumeRecord>>> ListVolumes(const std::string& start_after,
                                                                size_t limit, bool* more);

  Status PutNode(const rec::NodeRecord& record);
  Result<std::vector<rec::NodeRecord>> ListNodes();

 private:
  store::MetadataStore* store_;
};

}  // namespace tandem::controller

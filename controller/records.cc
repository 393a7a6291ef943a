#include "controller/records.h"

#include <utility>

namespace tandem::controller {

namespace {

constexpr char kVolumePrefix[] = "/tandem/volumes/";
constexpr char kVolumeNamePrefix[] = "/tandem/volume-names/";
constexpr char kNodePrefix[] = "/tandem/nodes/";

template <typename T>
Result<T> Parse(const store::KeyValue& kv) {
  T record;
  if (!record.ParseFromString(kv.value)) {
    return Status::DataLoss("metadata store record " + kv.key + " does not parse");
  }
  return record;
}

Status CompareFailed(const std::string& what) {
  return Status::Aborted(what + " changed concurrently; retry");
}

}  // namespace

std::string VolumeKey(const std::string& volume_id) { return kVolumePrefix + volume_id; }
std::string VolumeNameKey(const std::string& name) { return kVolumeNamePrefix + name; }
std::string NodeKey(const std::string& node_id) { return kNodePrefix + node_id; }

Result<std::optional<Versioned<rec::VolumeRecord>>> Records::GetVolume(
    const std::string& volume_id) {
  TANDEM_ASSIGN_OR_RETURN(auto kv, store_->Get(VolumeKey(volume_id)));
  if (!kv) return std::optional<Versioned<rec::VolumeRecord>>();
  TANDEM_ASSIGN_OR_RETURN(auto record, Parse<rec::VolumeRecord>(*kv));
  return std::optional<Versioned<rec::VolumeRecord>>(
      Versioned<rec::VolumeRecord>{std::move(record), kv->mod_revision});
}

Result<std::optional<std::string>> Records::GetVolumeIdByName(const std::string& name) {
  TANDEM_ASSIGN_OR_RETURN(auto kv, store_->Get(VolumeNameKey(name)));
  if (!kv) return std::optional<std::string>();
  return std::optional<std::string>(kv->value);
}

Result<int64_t> Records::CreateVolume(const rec::VolumeRecord& record) {
  store::TxnRequest txn;
  txn.require_leader = true;
  txn.compares = {store::Compare::Absent(VolumeKey(record.volume_id())),
                  store::Compare::Absent(VolumeNameKey(record.name()))};
  txn.ops = {store::Op::Put(VolumeKey(record.volume_id()), record.SerializeAsString()),
             store::Op::Put(VolumeNameKey(record.name()), record.volume_id())};
  TANDEM_ASSIGN_OR_RETURN(auto result, store_->Txn(txn));
  if (!result.succeeded) return CompareFailed("volume name " + record.name());
  return result.revision;
}

Result<int64_t> Records::UpdateVolume(const rec::VolumeRecord& record, int64_t mod_revision) {
  store::TxnRequest txn;
  txn.require_leader = true;
  txn.compares = {store::Compare::ModRevisionEquals(VolumeKey(record.volume_id()), mod_revision)};
  txn.ops = {store::Op::Put(VolumeKey(record.volume_id()), record.SerializeAsString())};
  TANDEM_ASSIGN_OR_RETURN(auto result, store_->Txn(txn));
  if (!result.succeeded) return CompareFailed("volume " + record.volume_id());
  return result.revision;
}

Status Records::DeleteVolume(const rec::VolumeRecord& record, int64_t mod_revision) {
  store::TxnRequest txn;
  txn.require_leader = true;
  txn.compares = {store::Compare::ModRevisionEquals(VolumeKey(record.volume_id()), mod_revision)};
  txn.ops = {store::Op::Delete(VolumeKey(record.volume_id()))};
  // The name index may already point at a newer volume of the same name
  // only if this one's record was gone; delete it only if it is ours.
  auto name = GetVolumeIdByName(record.name());
  if (!name.ok()) return name.status();
  if (*name && **name == record.volume_id()) {
    txn.ops.push_back(store::Op::Delete(VolumeNameKey(record.name())));
  }
  auto result = store_->Txn(txn);
  if (!result.ok()) return result.status();
  if (!result->succeeded) return CompareFailed("volume " + record.volume_id());
  return Status::Ok();
}

Result<std::vector<Versioned<rec::VolumeRecord>>> Records::ListVolumes(
    const std::string& start_after, size_t limit, bool* more) {
  std::string after = start_after.empty() ? "" : VolumeKey(start_after);
  TANDEM_ASSIGN_OR_RETURN(auto range, store_->Range(kVolumePrefix, after, limit));
  std::vector<Versioned<rec::VolumeRecord>> out;
  out.reserve(range.kvs.size());
  for (const auto& kv : range.kvs) {
    TANDEM_ASSIGN_OR_RETURN(auto record, Parse<rec::VolumeRecord>(kv));
    out.push_back({std::move(record), kv.mod_revision});
  }
  if (more != nullptr) *more = range.more;
  return out;
}

Status Records::PutNode(const rec::NodeRecord& record) {
  store::TxnRequest txn;
  txn.require_leader = true;
  txn.ops = {store::Op::Put(NodeKey(record.node_id()), record.SerializeAsString())};
  auto result = store_->Txn(txn);
  return result.ok() ? Status::Ok() : result.status();
}

Result<std::vector<rec::NodeRecord>> Records::ListNodes() {
  std::vector<rec::NodeRecord> out;
  std::string after;
  // Paged so a large cluster never needs one huge read.
  for (int page = 0; page < 1000000; ++page) {
    TANDEM_ASSIGN_OR_RETURN(auto range, store_->Range(kNodePrefix, after, 500));
    for (const auto& kv : range.kvs) {
      TANDEM_ASSIGN_OR_RETURN(auto record, Parse<rec::NodeRecord>(kv));
      out.push_back(std::move(record));
    }
    if (!range.more || range.kvs.empty()) break;
    after = range.kvs.back().key;
  }
  return out;
}

}  // namespace tandem::controller

#pragma once
// MetadataStoreWrapper: forwards every call to another MetadataStore (leveldb's
// EnvWrapper pattern), so a test overrides only the call it wants to break:
//
//   class LosesTxnReplies : public MetadataStoreWrapper {
//     using MetadataStoreWrapper::MetadataStoreWrapper;
//     Result<TxnResult> Txn(const TxnRequest& t) override {
//       auto r = MetadataStoreWrapper::Txn(t);     // applied...
//       return Status::Unavailable("reply lost");  // ...but the caller does not know
//     }
//   };
//
// The wrapper does not own `target`, which must outlive it.

#include "controller/store/metadata_store.h"

namespace tandem::store {

class MetadataStoreWrapper : public MetadataStore {
 public:
  explicit MetadataStoreWrapper(MetadataStore* target) : target_(target) {}

  MetadataStore* target() const { return target_; }

  std::string_view Backend() const override { return target_->Backend(); }
  Result<std::optional<KeyValue>> Get(std::string_view key) override { return target_->Get(key); }
  Result<RangeResult> Range(std::string_view prefix, std::string_view start_after,
                            size_t limit) override {
    return target_->Range(prefix, start_after, limit);
  }
  Result<TxnResult> Txn(const TxnRequest& txn) override { return target_->Txn(txn); }
  Status Campaign(std::chrono::milliseconds timeout) override { return target_->Campaign(timeout); }
  Status Resign() override { return target_->Resign(); }
  bool IsLeader() const override { return target_->IsLeader(); }
  Result<std::optional<std::string>> Leader() override { return target_->Leader(); }
  Result<std::unique_ptr<Watcher>> Watch(std::string_view prefix, int64_t after_revision) override {
    return target_->Watch(prefix, after_revision);
  }

 private:
  MetadataStore* const target_;
};

}  // namespace tandem::store

#include "controller/store/txn_validation.h"

#include <set>

namespace tandem::store {

Status ValidateKey(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("key is empty");
  if (key.size() > kMaxKeyBytes) {
    return Status::InvalidArgument("key is " + std::to_string(key.size()) + " bytes, limit " +
                                   std::to_string(kMaxKeyBytes));
  }
  return Status::Ok();
}

Status ValidateTxn(const TxnRequest& txn) {
  for (const Compare& c : txn.compares) TANDEM_RETURN_IF_ERROR(ValidateKey(c.key));
  std::set<std::string_view> written;
  size_t total = 0;
  for (const Op& op : txn.ops) {
    TANDEM_RETURN_IF_ERROR(ValidateKey(op.key));
    total += op.key.size() + op.value.size();
    if (op.kind == Op::Kind::kPut && op.value.size() > kMaxValueBytes) {
      return Status::InvalidArgument("value of " + op.key + " is " +
                                     std::to_string(op.value.size()) + " bytes, limit " +
                                     std::to_string(kMaxValueBytes));
    }
    // etcd refuses a txn that writes one key twice; refuse it on both backends.
    if (!written.insert(op.key).second) {
      return Status::InvalidArgument("txn writes key " + op.key + " more than once");
    }
  }
  // etcd would refuse it ("request is too large"); refuse it on both backends.
  if (total > kMaxTxnBytes) {
    return Status::InvalidArgument("txn writes " + std::to_string(total) + " bytes, limit " +
                                   std::to_string(kMaxTxnBytes));
  }
  return Status::Ok();
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last != 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return end;
}

}  // namespace tandem::store

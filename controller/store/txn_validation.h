#pragma once
// Argument checks shared by both backends, so a bad request gets the same
// INVALID_ARGUMENT (naming the problem) whichever store is configured.

#include <string>
#include <string_view>

#include "common/status.h"
#include "controller/store/metadata_store.h"

namespace tandem::store {

// Non-empty, at most kMaxKeyBytes.
Status ValidateKey(std::string_view key);
// Every key valid, values within kMaxValueBytes, the ops within
// kMaxTxnBytes, no key written twice.
Status ValidateTxn(const TxnRequest& txn);
// The smallest key greater than every key starting with `prefix` (etcd's
// "range_end = prefix + 1"); empty when there is none (prefix empty or all
// 0xff), meaning "no upper bound".
std::string PrefixEnd(std::string_view prefix);

}  // namespace tandem::store

#pragma once
// Validation of the ids that name things on disk and on the wire: volume ids,
// replica ids, node ids. An id becomes a directory name under the data dir,
// so the rule is strict: 1..kMaxIdLength characters from [A-Za-z0-9._-],
// and not "." or "..".
//
// (replica/replica.h ValidateId applies the same rule; its owner switches to
// this one.)

#include <cstddef>
#include <string_view>

#include "common/status.h"

namespace tandem {

constexpr size_t kMaxIdLength = 128;

// INVALID_ARGUMENT naming `field` when `id` breaks the rule above.
Status ValidateId(std::string_view field, std::string_view id);

}  // namespace tandem

#include "common/id.h"

#include <string>

namespace tandem {

Status ValidateId(std::string_view field, std::string_view id) {
  const std::string name(field);
  if (id.empty() || id.size() > kMaxIdLength) {
    return Status::InvalidArgument(name + " must be 1 to " + std::to_string(kMaxIdLength) +
                                   " characters long");
  }
  if (id == "." || id == "..") {
    return Status::InvalidArgument(name + " may not be \".\" or \"..\"");
  }
  for (char ch : id) {
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok) {
      return Status::InvalidArgument(name + " may only contain characters from [A-Za-z0-9._-]");
    }
  }
  return Status::Ok();
}

}  // namespace tandem

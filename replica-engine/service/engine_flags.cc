#include "replica-engine/service/engine_flags.h"

#include <cstdint>

namespace tandem::service {

Status ParseCpu(const std::string& text, long configured_cpus, int* cpu) {
  if (text == "-1") {
    *cpu = -1;
    return Status::Ok();
  }
  const std::string range = "-1 (no pinning) or 0.." + std::to_string(configured_cpus - 1);
  int64_t v = 0;
  bool ok = !text.empty() && text.size() <= 6;  // bounded: no overflow below
  for (size_t i = 0; ok && i < text.size(); ++i) {
    ok = text[i] >= '0' && text[i] <= '9';
    v = v * 10 + (text[i] - '0');
  }
  if (!ok || v >= configured_cpus) {
    return Status::InvalidArgument("--cpu '" + text + "' is not " + range);
  }
  *cpu = static_cast<int>(v);
  return Status::Ok();
}

}  // namespace tandem::service

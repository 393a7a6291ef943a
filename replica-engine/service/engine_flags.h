#pragma once
// tandem-engine flag values that need more than Flags::GetUint: each parser
// is pure, so the daemon's exit-2 paths are unit-tested.

#include <string>

#include "common/status.h"

namespace tandem::service {

// --cpu: "-1" (no pinning) or a CPU number in 0..configured_cpus-1, plain
// decimal (no sign, suffix or white space). INVALID_ARGUMENT naming --cpu
// and the range otherwise ("abc", "1x", "" and a CPU the machine does not
// have were silently CPU 0 or a failing pin under atoi).
Status ParseCpu(const std::string& text, long configured_cpus, int* cpu);

}  // namespace tandem::service

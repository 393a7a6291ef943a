#pragma once
// RunCommand: runs a system tool (mkfs, mount, resize2fs, ...) the node plugin
// cannot replace with a library call, with a deadline. No shell: arguments go
// to execvp as they are, so a volume id or path can never be interpreted.

#include <chrono>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::node {

struct CommandOutput {
  int exit_code = 0;   // 0..255, or 128+signal when it was killed
  std::string output;  // stdout and stderr interleaved, truncated to 64 KiB
};

// Runs argv[0] (looked up in PATH) with argv[1..]. Returns the exit status and
// output; a non-zero exit is NOT an error here (callers decide). Errors:
// INVALID_ARGUMENT for an empty argv, NOT_FOUND when the tool is not
// installed, DEADLINE_EXCEEDED when it ran past `timeout` (it is then killed).
Result<CommandOutput> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(120));

// RunCommand that turns a non-zero exit into INTERNAL "<tool> failed (exit N): <output>".
Status RunChecked(const std::vector<std::string>& argv,
                  std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace tandem::node

#pragma once
// tandemctl's command groups and the conventions they share.
//
// Output: one "key=value" line per field, keys named after engine.proto's
// fields; a list prints a blank line between items. Errors: "error: CODE:
// message" on stderr and exit status 1; a malformed command line: a usage
// message on stderr and exit status 2.

#include <chrono>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/status.h"
#include "replica-engine/api/engine_client.h"

namespace tandem::tandemctl {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct Context {
  api::EngineClient* client;
  std::chrono::milliseconds deadline;
};

// argv[0] is the verb ("create"), the rest its flags.
int RunReplicaCommand(const Context& ctx, int argc, char** argv);
int RunTargetCommand(const Context& ctx, int argc, char** argv);

// Prints "error: CODE: message" to stderr; returns kExitError.
int ReportError(const Status& status);
// Prints "tandemctl: <message>" and the usage text to stderr; returns kExitUsage.
int UsageError(const std::string& message);

// Parses a verb's flags (argv[0] is the verb) and checks that each flag in
// `required` is set. Returns false when the command must stop: *exit is then
// kExitUsage (error printed) or kExitOk (--help printed the usage).
bool ParseVerbFlags(const char* group, Flags* flags, int argc, char** argv,
                    const std::vector<std::string>& required, int* exit);

// Prints "key=value\n" to stdout.
void PrintField(const std::string& key, const std::string& value);
// Drops an enum name's prefix: "TARGET_STATE_READY" -> "READY".
std::string EnumSuffix(const std::string& name, const std::string& prefix);

}  // namespace tandem::tandemctl

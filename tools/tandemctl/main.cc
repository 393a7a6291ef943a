// tandemctl: the operator CLI of a tandem-engine's management API.
//
//   tandemctl [--engine=HOST:PORT|unix:/path] [--token=T|--token-file=F] [--deadline-ms=N]
//             <command>
//
// Global flags come before the command. Commands and their output: see Usage()
// below and commands.h.

#include <cstdio>
#include <string>
#include <vector>

#include "common/flags.h"
#include "tools/tandemctl/commands.h"

namespace tandem::tandemctl {

namespace pb = ::tandem::engine::v1;

namespace {

const char kUsage[] =
    "usage: tandemctl [--engine=HOST:PORT] [--token=T|--token-file=F] [--deadline-ms=N] "
    "<command>\n"
    "  --engine       engine management endpoint: HOST:PORT, tcp://HOST:PORT, unix:/path or "
    "unix:///path (default "
    "127.0.0.1:9600)\n"
    "  --token        management token (the engine's --mgmt-token)\n"
    "  --token-file   read the management token from this file (not visible in ps)\n"
    "  --deadline-ms  per-call deadline (default 30000)\n"
    "  --tls-ca=F [--tls-cert=F --tls-key=F]  TLS to the engine (mutual with cert and key)\n"
    "commands:\n"
    "  info\n"
    "  replica create --volume=V --replica-id=R --size=SIZE [--block-size=N] [--data-path=P]\n"
    "  replica delete --volume=V\n"
    "  replica get --volume=V\n"
    "  replica list\n"
    "  replica resize --volume=V --size=SIZE             (grow only)\n"
    "  replica fence --volume=V --epoch=N                (refuse every older epoch)\n"
    "  target create --volume=V --epoch=N --replica=HOST:PORT[:local] [--replica=...]...\n"
    "                [--size=SIZE] [--token=T] [--timeout-ms=N] [--nbd-tcp=HOST:PORT]\n"
    "                [--rebuild-rate=SIZE] [--reconnect-interval-ms=N] [--export=nbd|fuse-file]\n"
    "  target destroy --volume=V\n"
    "  target get --volume=V\n"
    "  target list\n"
    "  target add-replica --volume=V --replica=HOST:PORT[:local]\n"
    "  target remove-replica --volume=V --replica=HOST:PORT\n"
    "  target rebuild --volume=V --replica=HOST:PORT\n"
    "  target set-rate --volume=V --rate=SIZE           (bytes/s; 0: unlimited)\n"
    "  target resize --volume=V --size=SIZE             (grow only)\n"
    "  target watch --volume=V [--interval-ms=500] [--until-done] [--timeout-s=3600]\n"
    "      rebuild progress; --until-done: exit 0 when done, 1 if it failed or timed out\n"
    "SIZE takes the suffixes K, M, G, T (powers of 1024).\n";

int RunInfo(const Context& ctx, int argc) {
  if (argc != 1) return UsageError("info takes no arguments");
  Result<pb::EngineInfo> info = ctx.client->GetEngineInfo(ctx.deadline);
  if (!info.ok()) return ReportError(info.status());
  PrintField("node_id", info->node_id());
  PrintField("data_address", info->data_address());
  PrintField("backend", info->backend());
  PrintField("version", info->version());
  PrintField("capacity_total_bytes", std::to_string(info->capacity_total_bytes()));
  PrintField("capacity_free_bytes", std::to_string(info->capacity_free_bytes()));
  PrintField("capacity_available_bytes", std::to_string(info->capacity_available_bytes()));
  PrintField("replica_count", std::to_string(info->replica_count()));
  PrintField("provisioned_bytes", std::to_string(info->provisioned_bytes()));
  PrintField("target_count", std::to_string(info->target_count()));
  return kExitOk;
}

// Index of the command word: the first argument that is neither a global flag
// nor the value of a "--flag value" pair.
int CommandIndex(int argc, char** argv) {
  int i = 1;
  while (i < argc) {
    std::string arg = argv[i];
    if (arg.rfind("-", 0) != 0) break;
    bool takes_next = arg.find('=') == std::string::npos && arg != "--help" && arg != "-h";
    i += takes_next ? 2 : 1;
  }
  return i;
}

}  // namespace

int ReportError(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return kExitError;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "tandemctl: %s\n%s", message.c_str(), kUsage);
  return kExitUsage;
}

bool ParseVerbFlags(const char* group, Flags* flags, int argc, char** argv,
                    const std::vector<std::string>& required, int* exit) {
  // Flags::Parse skips argv[0] like a program name; here that is the verb.
  const std::string command = std::string(group) + " " + argv[0];
  Status st = flags->Parse(argc, argv);
  if (!st.ok()) {
    *exit = UsageError(command + ": " + st.message());
    return false;
  }
  if (flags->help_requested()) {
    std::fputs(kUsage, stdout);
    *exit = kExitOk;
    return false;
  }
  for (const std::string& name : required) {
    if (flags->Get(name).empty()) {
      *exit = UsageError(command + " needs --" + name);
      return false;
    }
  }
  return true;
}

void PrintField(const std::string& key, const std::string& value) {
  std::printf("%s=%s\n", key.c_str(), value.c_str());
}

std::string EnumSuffix(const std::string& name, const std::string& prefix) {
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

int Main(int argc, char** argv) {
  int cmd = CommandIndex(argc, argv);
  Flags flags;
  flags.Define("engine", "127.0.0.1:9600", "engine management address");
  flags.Define("token", "", "management token");
  flags.Define("token-file", "", "file holding the management token");
  flags.Define("deadline-ms", "30000", "per-call deadline");
  flags.Define("tls-ca", "", "TLS: CA file to verify the engine with");
  flags.Define("tls-cert", "", "TLS: client certificate file (mutual TLS)");
  flags.Define("tls-key", "", "TLS: client key file (mutual TLS)");
  Status st = flags.Parse(cmd, argv);
  if (!st.ok()) return UsageError(st.message());
  if (flags.help_requested()) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (cmd >= argc) return UsageError("no command given");
  uint64_t deadline_ms = 0;
  if (!(st = flags.GetUint("deadline-ms", &deadline_ms)).ok() || deadline_ms == 0) {
    return UsageError("--deadline-ms must be a positive number");
  }

  std::string token = flags.Get("token");
  if (const std::string file = flags.Get("token-file"); !file.empty()) {
    if (!token.empty()) return UsageError("--token and --token-file are exclusive");
    if (!(st = ReadSecretFile("--token-file", file, &token)).ok()) return UsageError(st.message());
  }
  const rpc::TlsConfig tls{flags.Get("tls-cert"), flags.Get("tls-key"), flags.Get("tls-ca")};
  Result<std::unique_ptr<api::EngineClient>> client =
      api::EngineClient::Connect(flags.Get("engine"), token, tls);
  if (!client.ok()) return UsageError(client.status().message());
  Context ctx{client->get(), std::chrono::milliseconds(deadline_ms)};
  const std::string group = argv[cmd];
  int rest_argc = argc - cmd - 1;
  char** rest_argv = argv + cmd + 1;
  if (group == "info") return RunInfo(ctx, argc - cmd);
  if (group == "replica" || group == "target") {
    if (rest_argc < 1) return UsageError(group + " needs a verb");
    return group == "replica" ? RunReplicaCommand(ctx, rest_argc, rest_argv)
                              : RunTargetCommand(ctx, rest_argc, rest_argv);
  }
  return UsageError("unknown command \"" + group + "\"");
}

}  // namespace tandem::tandemctl

int main(int argc, char** argv) { return tandem::tandemctl::Main(argc, argv); }

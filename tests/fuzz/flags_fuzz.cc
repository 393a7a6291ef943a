// libFuzzer target for the command-line flag parser (common/flags.h), which
// every daemon and tool runs over its argv (and a controller or a shell
// script builds that argv from configuration).
//
// The input is an argv: NUL-separated arguments after argv[0]. The flags
// defined are those of tandem-engine's shape (strings, sizes, numbers, booleans,
// a repeatable flag). Checked properties:
// - Parse never reads outside argv (ASan) and fails only with
//   INVALID_ARGUMENT;
// - after a successful Parse every value comes from the arguments: Get() is
//   the last value given or the default, GetAll() lists the values given, in
//   order;
// - ParseSize / GetUint accept exactly "DIGITS" (GetUint without sizes) or
//   "DIGITS[KMGTkmgt]" and return the exact value, and reject anything that
//   would not fit in 64 bits, checked against an independent reference
//   parser over every argument and every flag value;
// - ParsePort / ParseHostPort (the engine's --listen) accept exactly 1 to 5
//   decimal digits of a value in 1..65535 (0 too when allowed), never a
//   suffix, and ParseHostPort splits at the last ':'.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/flags.h"

namespace {

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

// The documented grammar, written independently of common/flags.cc.
std::optional<uint64_t> ReferenceSize(const std::string& text, bool sizes) {
  size_t i = 0;
  unsigned __int128 v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    v = v * 10 + static_cast<unsigned>(text[i] - '0');
    if (v > UINT64_MAX) return std::nullopt;
    ++i;
  }
  if (i == 0) return std::nullopt;
  int shift = 0;
  if (i < text.size()) {
    if (!sizes || i + 1 != text.size()) return std::nullopt;
    switch (text[i]) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      case 'T':
      case 't':
        shift = 40;
        break;
      default:
        return std::nullopt;
    }
  }
  v <<= shift;
  if (v > UINT64_MAX) return std::nullopt;
  return static_cast<uint64_t>(v);
}

void CheckSize(const std::string& text) {
  uint64_t got = 0;
  const tandem::Status st = tandem::ParseSize(text, &got);
  const std::optional<uint64_t> want = ReferenceSize(text, /*sizes=*/true);
  Check(st.ok() == want.has_value());
  if (st.ok()) Check(got == *want);
  if (!st.ok()) Check(st.code() == tandem::StatusCode::kInvalidArgument);
}

void CheckPort(const std::string& text) {
  // Reference: 1..5 digits, value in range.
  bool digits = !text.empty() && text.size() <= 5;
  uint32_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') digits = false;
    if (digits) v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  for (bool allow_zero : {false, true}) {
    const bool want = digits && v <= 65535 && (allow_zero || v != 0);
    uint16_t got = 7;
    const tandem::Status st = tandem::ParsePort(text, allow_zero, &got);
    Check(st.ok() == want);
    Check(st.ok() ? got == v : got == 7 && st.code() == tandem::StatusCode::kInvalidArgument);
  }
  std::string host = "h";
  uint16_t port = 7;
  const tandem::Status st = tandem::ParseHostPort("--listen", text, true, &host, &port);
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    Check(!st.ok());
    return;
  }
  uint16_t want_port = 0;
  Check(st.ok() == tandem::ParsePort(text.substr(colon + 1), true, &want_port).ok());
  if (st.ok()) Check(host == text.substr(0, colon) && port == want_port);
  if (!st.ok()) Check(host == "h" && port == 7 && st.message().rfind("--listen", 0) == 0);
}

struct FlagDef {
  const char* name;
  const char* default_value;
};

// tandem-engine's kinds of flag; "size" and "port" are read as numbers.
constexpr FlagDef kDefs[] = {
    {"data-dir", "/var/lib/tandem"},
    {"listen", "127.0.0.1:9500"},
    {"rebuild-rate", "0"},
    {"request-timeout-ms", "5000"},
    {"size", "1G"},
    {"verbose", "false"},
    {"busy-poll", "true"},
    {"replica", ""},
    {"port", "x12"},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  std::vector<std::string> args = {"prog"};
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  if (size > 0) args.push_back(cur);
  if (args.size() > 64) return 0;

  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);  // as a real argv

  for (size_t i = 1; i < args.size(); ++i) {
    CheckSize(args[i]);
    CheckPort(args[i]);
  }

  tandem::Flags flags;
  for (const FlagDef& d : kDefs) flags.Define(d.name, d.default_value, "help");
  const tandem::Status st = flags.Parse(static_cast<int>(args.size()), argv.data());
  if (!st.ok()) {
    Check(st.code() == tandem::StatusCode::kInvalidArgument);
    return 0;
  }

  // Every value given, per flag, in order, straight from the arguments.
  std::map<std::string, std::vector<std::string>> given;
  bool help = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      help = true;
      continue;
    }
    Check(a.rfind("--", 0) == 0);
    std::string name = a.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const FlagDef* def = nullptr;
    for (const FlagDef& d : kDefs) {
      if (name == d.name) def = &d;
    }
    Check(def != nullptr);
    if (!value) {
      const std::string dv = def->default_value;
      if (dv == "true" || dv == "false") {
        value = "true";
      } else {
        Check(i + 1 < args.size());
        value = args[++i];
      }
    }
    given[name].push_back(*value);
  }
  Check(flags.help_requested() == help);

  for (const FlagDef& d : kDefs) {
    const std::vector<std::string>& want = given[d.name];
    Check(flags.GetAll(d.name) == want);
    const std::string value = flags.Get(d.name);
    Check(value == (want.empty() ? std::string(d.default_value) : want.back()));
    CheckSize(value);
    for (bool sizes : {false, true}) {
      uint64_t got = 0;
      const tandem::Status u = flags.GetUint(d.name, &got, sizes);
      const std::optional<uint64_t> ref = ReferenceSize(value, sizes);
      Check(u.ok() == ref.has_value());
      if (u.ok()) Check(got == *ref);
      if (!u.ok()) {
        Check(u.code() == tandem::StatusCode::kInvalidArgument);
        Check(u.ToString().find(std::string("--") + d.name) != std::string::npos);
      }
    }
    flags.GetBool(d.name);
  }
  Check(flags.Get("not-defined").empty());
  Check(!flags.Usage("prog").empty());
  return 0;
}

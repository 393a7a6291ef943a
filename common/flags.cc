#include "common/flags.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace tandem {

void Flags::Define(const std::string& name, const std::string& default_value,
                   const std::string& help) {
  defs_[name] = Def{default_value, help};
}

Status Flags::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) return Status::InvalidArgument("unexpected argument: " + arg);
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = defs_.find(name);
    if (it == defs_.end()) return Status::InvalidArgument("unknown flag --" + name);
    if (!has_value) {
      // Boolean flags may stand alone; others take the next argument.
      if (it->second.default_value == "false" || it->second.default_value == "true") {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return Status::InvalidArgument("flag --" + name + " needs a value");
      }
    }
    values_[name].push_back(value);
  }
  return Status::Ok();
}

std::string Flags::Get(const std::string& name) const {
  auto v = values_.find(name);
  if (v != values_.end() && !v->second.empty()) return v->second.back();
  auto d = defs_.find(name);
  return d == defs_.end() ? std::string() : d->second.default_value;
}

std::vector<std::string> Flags::GetAll(const std::string& name) const {
  auto v = values_.find(name);
  return v == values_.end() ? std::vector<std::string>() : v->second;
}

Status ParseSize(const std::string& text, uint64_t* out) {
  if (text.empty()) return Status::InvalidArgument("empty number");
  // strtoull alone would also take leading white space, a sign, and a minus
  // that wraps around (" -1" is 2^64 - 1).
  if (text[0] < '0' || text[0] > '9') return Status::InvalidArgument("not a number: " + text);
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str()) {
    return Status::InvalidArgument("not a number: " + text);
  }
  std::string suffix(end);
  int shift = 0;
  if (suffix == "K" || suffix == "k") {
    shift = 10;
  } else if (suffix == "M" || suffix == "m") {
    shift = 20;
  } else if (suffix == "G" || suffix == "g") {
    shift = 30;
  } else if (suffix == "T" || suffix == "t") {
    shift = 40;
  } else if (!suffix.empty()) {
    return Status::InvalidArgument("bad size suffix in " + text);
  }
  if (shift && v > (~0ull >> shift)) return Status::InvalidArgument("size too large: " + text);
  *out = v << shift;
  return Status::Ok();
}

Status Flags::GetUint(const std::string& name, uint64_t* out, bool sizes) const {
  std::string v = Get(name);
  Status st = ParseSize(v, out);
  if (st.ok() && !sizes && v.find_first_not_of("0123456789") != std::string::npos) {
    st = Status::InvalidArgument("not a number: " + v);
  }
  return st.ok() ? st : st.WithContext("--" + name);
}

bool Flags::GetBool(const std::string& name) const {
  std::string v = Get(name);
  return v == "true" || v == "1" || v == "yes";
}

std::string Flags::Usage(const std::string& program) const {
  std::string s = "usage: " + program + " [flags]\n";
  for (const auto& [name, def] : defs_) {
    s += "  --" + name + " (default \"" + def.default_value + "\")\n      " + def.help + "\n";
  }
  return s;
}

Status ReadSecretFile(const std::string& flag, const std::string& path, std::string* out) {
  constexpr size_t kMaxSecret = 4096;
  const std::string what = flag + " " + path;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status::InvalidArgument(what + ": " + std::strerror(errno));
  }
  std::string data(kMaxSecret + 1, '\0');
  const size_t n = std::fread(data.data(), 1, data.size(), f);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status::InvalidArgument(what + ": read error");
  if (n > kMaxSecret) {
    return Status::InvalidArgument(what + " is larger than " + std::to_string(kMaxSecret) +
                                   " bytes");
  }
  data.resize(n);
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r')) data.pop_back();
  if (data.empty()) {
    // An empty token would silently mean "no authentication".
    return Status::InvalidArgument(what + " holds an empty secret");
  }
  *out = std::move(data);
  return Status::Ok();
}

}  // namespace tandem

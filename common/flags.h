#pragma once
// Flags: a small "--name=value" / "--name value" command-line parser for the
// daemons and tools. Unknown flags and malformed values are errors (a typo in a
// storage daemon's flags must not be silently ignored).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/address.h"  // ParsePort, ParseHostPort (were here)
#include "common/status.h"

namespace tandem {

class Flags {
 public:
  // Declares a flag with its default and help text.
  void Define(const std::string& name, const std::string& default_value, const std::string& help);
  // Parses argv[1..]. INVALID_ARGUMENT naming the flag on an unknown flag or a
  // missing value. Repeated flags keep every value (see GetAll).
  Status Parse(int argc, char** argv);

  std::string Get(const std::string& name) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  // INVALID_ARGUMENT naming the flag when the value is not an unsigned integer
  // (suffixes K, M, G, T accepted as powers of 1024 when `sizes`).
  Status GetUint(const std::string& name, uint64_t* out, bool sizes = false) const;
  bool GetBool(const std::string& name) const;
  std::string Usage(const std::string& program) const;
  bool help_requested() const { return help_; }

 private:
  struct Def {
    std::string default_value;
    std::string help;
  };
  std::map<std::string, Def> defs_;
  std::map<std::string, std::vector<std::string>> values_;
  bool help_ = false;
};

// Parses "123", "4K", "1G" (powers of 1024). INVALID_ARGUMENT on anything else
// (white space, a sign, an unknown suffix, more than 2^64 - 1).
Status ParseSize(const std::string& text, uint64_t* out);

// Reads a secret (a token) for the flag `flag` from the file `path`, so it
// is not on the command line (visible to every local user in ps): the
// file's contents without trailing "\n"/"\r\n". INVALID_ARGUMENT naming
// `flag` and `path` (never the contents) when the file cannot be read, is
// larger than 4096 bytes, or holds an empty secret.
Status ReadSecretFile(const std::string& flag, const std::string& path, std::string* out);

}  // namespace tandem

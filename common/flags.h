#pragma once
// Flags: a small "--name=value" / "--name value" command-line parser for the
// daemons and tools. Unknown flags and malformed values are errors (a typo in a
// storage daemon's flags must not be silently ignored).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

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

// Parses "123", "4K", "1G" (powers of 1024). INVALID_ARGUMENT on anything else.
Status ParseSize(const std::string& text, uint64_t* out);

}  // namespace tandem

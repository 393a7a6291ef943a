#include "common/address.h"

namespace tandem {

Status ParsePort(const std::string& text, bool allow_zero, uint16_t* out) {
  const std::string range = allow_zero ? "0..65535 (0: any)" : "1..65535";
  // Not ParseSize: "9k" must not mean port 9216.
  uint32_t v = 0;
  bool ok = !text.empty() && text.size() <= 5;  // at most 99999: no overflow
  for (size_t i = 0; ok && i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') {
      ok = false;
    } else {
      v = v * 10 + static_cast<uint32_t>(text[i] - '0');
    }
  }
  if (!ok || v > 65535 || (v == 0 && !allow_zero)) {
    return Status::InvalidArgument("port '" + text + "' is not a decimal number in " + range);
  }
  *out = static_cast<uint16_t>(v);
  return Status::Ok();
}

Status ParseHostPort(const std::string& what, const std::string& text, bool allow_zero_port,
                     std::string* host, uint16_t* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument(what + " must be HOST:PORT, got '" + text + "'");
  }
  uint16_t p = 0;
  TANDEM_RETURN_IF_ERROR(
      ParsePort(text.substr(colon + 1), allow_zero_port, &p).WithContext(what + " '" + text + "'"));
  *host = text.substr(0, colon);
  *port = p;
  return Status::Ok();
}

}  // namespace tandem

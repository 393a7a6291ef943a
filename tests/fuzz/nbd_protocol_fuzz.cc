// libFuzzer target for the NBD parsers (replica-engine/frontend/
// nbd_protocol.h): the code that reads bytes from an unauthenticated NBD
// client.
//
// The input is walked the way an NbdConnection walks its socket: 4 bytes of
// client flags, then options (16-byte header + payload, INFO/GO payloads
// parsed), and once an option fails to parse, the rest as transmission
// requests (28-byte header, a WRITE followed by its payload). Checked
// properties: parsers never read past `len` (ASan), a parsed request
// re-encodes to the same bytes, string_views stay inside the input, and
// ValidateRequest accepts only aligned, in-range requests.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "replica-engine/frontend/nbd_protocol.h"

namespace {

using namespace tandem::frontend::nbd;  // NOLINT

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

void CheckValidate(const Request& r, const uint8_t* geometry_seed) {
  ExportGeometry g;
  g.block_size = 1u << (geometry_seed[0] % 13);  // 1 .. 4096
  g.size = (static_cast<uint64_t>(GetBe32(geometry_seed + 1)) + 1) * g.block_size;
  uint32_t err = ValidateRequest(r, g);
  Check(err == 0 || err == kErrInval || err == kErrNoSpc);
  if (err != 0 || r.type == kCmdDisc || r.type == kCmdFlush) return;
  Check(r.type == kCmdRead || r.type == kCmdWrite || r.type == kCmdTrim ||
        r.type == kCmdWriteZeroes);
  Check(r.length > 0 && r.length % g.block_size == 0 && r.offset % g.block_size == 0);
  Check(r.offset + r.length <= g.size && r.offset + r.length > r.offset);
  if (r.type == kCmdRead || r.type == kCmdWrite) Check(r.length <= kMaxPayload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const uint8_t* geometry_seed = data;
  data += 5;
  size -= 5;
  const uint8_t* end = data + size;
  const uint8_t* p = data;

  uint32_t flags = 0;
  ParseResult r = ParseClientFlags(p, static_cast<size_t>(end - p), &flags);
  if (r == ParseResult::kOk) {
    Check((flags & ~3u) == 0);
    p += kClientFlagsSize;
  }

  // Options until one does not parse.
  for (;;) {
    OptionHeader h;
    if (ParseOptionHeader(p, static_cast<size_t>(end - p), &h) != ParseResult::kOk) break;
    Check(h.length <= kMaxOptionLength);
    if (static_cast<size_t>(end - p) < kOptionHeaderSize + h.length) break;
    const uint8_t* payload = p + kOptionHeaderSize;
    InfoRequest info;
    if (ParseInfoRequest(payload, h.length, &info) == ParseResult::kOk) {
      auto* name = reinterpret_cast<const uint8_t*>(info.name.data());
      Check(name >= payload && name + info.name.size() <= payload + h.length);
      Check(info.name.size() <= kMaxNameLength);
      Check(6 + info.name.size() + 2u * info.num_requests == h.length);
    }
    p += kOptionHeaderSize + h.length;
  }

  // Then transmission requests.
  for (;;) {
    Request req;
    if (ParseRequest(p, static_cast<size_t>(end - p), &req) != ParseResult::kOk) break;
    uint8_t again[kRequestSize];
    EncodeRequest(req, again);
    Check(memcmp(again, p, kRequestSize) == 0);
    CheckValidate(req, geometry_seed);
    p += kRequestSize;
    if (HasPayload(req)) {
      if (req.length > static_cast<size_t>(end - p)) break;
      p += req.length;
    }
  }

  // Encoders must produce what the parsers accept.
  std::string out;
  AppendOptionReply(kOptGo, kRepErrUnknown,
                    std::string_view(reinterpret_cast<const char*>(data), size < 64 ? size : 64),
                    &out);
  Check(out.size() == kOptionReplyHeaderSize + (size < 64 ? size : 64));
  return 0;
}

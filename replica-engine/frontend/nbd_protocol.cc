#include "replica-engine/frontend/nbd_protocol.h"

#include <cstring>

namespace tandem::frontend::nbd {

const char* ParseResultName(ParseResult r) {
  switch (r) {
    case ParseResult::kOk:
      return "ok";
    case ParseResult::kIncomplete:
      return "incomplete";
    case ParseResult::kBadMagic:
      return "bad magic";
    case ParseResult::kTooLong:
      return "too long";
    case ParseResult::kMalformed:
      return "malformed";
    case ParseResult::kUnknownFlags:
      return "unknown flags";
  }
  return "unknown";
}

ParseResult ParseClientFlags(const uint8_t* p, size_t len, uint32_t* flags) {
  if (len < kClientFlagsSize) return ParseResult::kIncomplete;
  uint32_t f = GetBe32(p);
  // The spec: "the server MUST drop the TCP connection if the client sets an
  // unknown flag, or a flag that does not match something advertised".
  if ((f & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) != 0) {
    return ParseResult::kUnknownFlags;
  }
  *flags = f;
  return ParseResult::kOk;
}

ParseResult ParseOptionHeader(const uint8_t* p, size_t len, OptionHeader* out) {
  if (len < kOptionHeaderSize) return ParseResult::kIncomplete;
  if (GetBe64(p) != kIHaveOpt) return ParseResult::kBadMagic;
  uint32_t length = GetBe32(p + 12);
  // Lengths are client-controlled; anything above what a real option needs
  // is treated as a denial-of-service attempt rather than skipped.
  if (length > kMaxOptionLength) return ParseResult::kTooLong;
  out->option = GetBe32(p + 8);
  out->length = length;
  return ParseResult::kOk;
}

ParseResult ParseInfoRequest(const uint8_t* data, size_t len, InfoRequest* out) {
  // u32 name length, name, u16 count, count x u16.
  if (len < 6) return ParseResult::kMalformed;
  uint32_t name_len = GetBe32(data);
  // Compare in 64 bits: name_len + 6 must not wrap.
  if (name_len > kMaxNameLength || static_cast<uint64_t>(name_len) + 6 > len) {
    return ParseResult::kMalformed;
  }
  const uint8_t* p = data + 4 + name_len;
  uint16_t count = GetBe16(p);
  p += 2;
  size_t rest = len - 6 - name_len;
  if (rest != static_cast<size_t>(count) * 2) return ParseResult::kMalformed;
  uint16_t requested = 0;
  for (uint16_t i = 0; i < count; ++i) {
    uint16_t type = GetBe16(p + 2 * i);
    if (type < 16) requested = static_cast<uint16_t>(requested | (1u << type));
  }
  out->name = std::string_view(reinterpret_cast<const char*>(data + 4), name_len);
  out->num_requests = count;
  out->requested = requested;
  return ParseResult::kOk;
}

ParseResult ParseRequest(const uint8_t* p, size_t len, Request* out) {
  if (len < kRequestSize) return ParseResult::kIncomplete;
  if (GetBe32(p) != kRequestMagic) return ParseResult::kBadMagic;
  out->flags = GetBe16(p + 4);
  out->type = GetBe16(p + 6);
  out->cookie = GetBe64(p + 8);
  out->offset = GetBe64(p + 16);
  out->length = GetBe32(p + 24);
  return ParseResult::kOk;
}

void EncodeRequest(const Request& r, uint8_t out[kRequestSize]) {
  PutBe32(out, kRequestMagic);
  PutBe16(out + 4, r.flags);
  PutBe16(out + 6, r.type);
  PutBe64(out + 8, r.cookie);
  PutBe64(out + 16, r.offset);
  PutBe32(out + 24, r.length);
}

uint32_t ValidateRequest(const Request& r, const ExportGeometry& g) {
  uint16_t allowed_flags = kCmdFlagFua;
  switch (r.type) {
    case kCmdDisc:
      return 0;
    case kCmdFlush:
      // offset/length are reserved (MUST be zero); being lenient costs nothing.
      return (r.flags & ~allowed_flags) != 0 ? kErrInval : 0;
    case kCmdRead:
    case kCmdWrite:
    case kCmdTrim:
      break;
    case kCmdWriteZeroes:
      allowed_flags |= kCmdFlagNoHole;
      break;
    default:
      return kErrInval;
  }
  if ((r.flags & ~allowed_flags) != 0) return kErrInval;
  if (r.length == 0) return kErrInval;
  uint64_t mask = static_cast<uint64_t>(g.block_size) - 1;
  if ((r.offset & mask) != 0 || (r.length & mask) != 0) return kErrInval;
  if ((r.type == kCmdRead || r.type == kCmdWrite) && r.length > kMaxPayload) return kErrInval;
  // offset + length without overflow: offset <= size && length <= size - offset.
  bool in_range = r.offset <= g.size && r.length <= g.size - r.offset;
  if (!in_range) {
    return (r.type == kCmdWrite || r.type == kCmdWriteZeroes) ? kErrNoSpc : kErrInval;
  }
  return 0;
}

void EncodeGreeting(uint16_t handshake_flags, uint8_t out[kGreetingSize]) {
  PutBe64(out, kNbdMagic);
  PutBe64(out + 8, kIHaveOpt);
  PutBe16(out + 16, handshake_flags);
}

void AppendOptionReply(uint32_t option, uint32_t reply_type, std::string_view data,
                       std::string* out) {
  uint8_t h[kOptionReplyHeaderSize];
  PutBe64(h, kOptReplyMagic);
  PutBe32(h + 8, option);
  PutBe32(h + 12, reply_type);
  PutBe32(h + 16, static_cast<uint32_t>(data.size()));
  out->append(reinterpret_cast<const char*>(h), sizeof(h));
  out->append(data);
}

void AppendServerReply(std::string_view name, std::string* out) {
  std::string data(4, '\0');
  PutBe32(reinterpret_cast<uint8_t*>(data.data()), static_cast<uint32_t>(name.size()));
  data.append(name);
  AppendOptionReply(kOptList, kRepServer, data, out);
}

void AppendInfoExport(uint32_t option, uint64_t size, uint16_t tx_flags, std::string* out) {
  uint8_t d[12];
  PutBe16(d, kInfoExport);
  PutBe64(d + 2, size);
  PutBe16(d + 10, tx_flags);
  AppendOptionReply(option, kRepInfo, std::string_view(reinterpret_cast<char*>(d), sizeof(d)), out);
}

void AppendInfoString(uint32_t option, uint16_t info_type, std::string_view s, std::string* out) {
  std::string data(2, '\0');
  PutBe16(reinterpret_cast<uint8_t*>(data.data()), info_type);
  data.append(s);
  AppendOptionReply(option, kRepInfo, data, out);
}

void AppendInfoBlockSize(uint32_t option, uint32_t min, uint32_t preferred, uint32_t max,
                         std::string* out) {
  uint8_t d[14];
  PutBe16(d, kInfoBlockSize);
  PutBe32(d + 2, min);
  PutBe32(d + 6, preferred);
  PutBe32(d + 10, max);
  AppendOptionReply(option, kRepInfo, std::string_view(reinterpret_cast<char*>(d), sizeof(d)), out);
}

void AppendExportNameReply(uint64_t size, uint16_t tx_flags, bool no_zeroes, std::string* out) {
  uint8_t d[10];
  PutBe64(d, size);
  PutBe16(d + 8, tx_flags);
  out->append(reinterpret_cast<const char*>(d), sizeof(d));
  if (!no_zeroes) out->append(kExportNameReplyZeroes, '\0');
}

void EncodeSimpleReply(uint32_t error, uint64_t cookie, uint8_t out[kSimpleReplySize]) {
  PutBe32(out, kSimpleReplyMagic);
  PutBe32(out + 4, error);
  PutBe64(out + 8, cookie);
}

const char* OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName:
      return "NBD_OPT_EXPORT_NAME";
    case kOptAbort:
      return "NBD_OPT_ABORT";
    case kOptList:
      return "NBD_OPT_LIST";
    case kOptStartTls:
      return "NBD_OPT_STARTTLS";
    case kOptInfo:
      return "NBD_OPT_INFO";
    case kOptGo:
      return "NBD_OPT_GO";
    case kOptStructuredReply:
      return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext:
      return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext:
      return "NBD_OPT_SET_META_CONTEXT";
  }
  return "NBD_OPT_?";
}

const char* CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead:
      return "NBD_CMD_READ";
    case kCmdWrite:
      return "NBD_CMD_WRITE";
    case kCmdDisc:
      return "NBD_CMD_DISC";
    case kCmdFlush:
      return "NBD_CMD_FLUSH";
    case kCmdTrim:
      return "NBD_CMD_TRIM";
    case kCmdCache:
      return "NBD_CMD_CACHE";
    case kCmdWriteZeroes:
      return "NBD_CMD_WRITE_ZEROES";
    case kCmdBlockStatus:
      return "NBD_CMD_BLOCK_STATUS";
  }
  return "NBD_CMD_?";
}

}  // namespace tandem::frontend::nbd

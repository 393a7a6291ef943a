#pragma once
// The NBD wire protocol (fixed newstyle handshake, simple replies), as
// specified in NetworkBlockDevice/nbd doc/proto.md: constants, big-endian
// helpers, and pure parsers/encoders. No I/O and no state: the connection
// (nbd_connection.h) drives these, and the fuzzer (tests/fuzz/
// nbd_protocol_fuzz.cc) feeds them arbitrary bytes.
//
// Contract for every parser: it reads only the `len` bytes it is given, never
// crashes or allocates on any input, and reports malformed input as a
// ParseResult (never an exception or an assert). Output structs are filled
// only on kOk; string_views in them point into the caller's input.
//
// Everything on the wire is big-endian (network byte order), unlike our own
// formats (common/coding.h is little-endian): use the Be helpers below.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::frontend::nbd {

// --- Big-endian helpers ---------------------------------------------------

inline void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void PutBe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
inline void PutBe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
inline uint16_t GetBe16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t GetBe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetBe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

// --- Magic numbers --------------------------------------------------------

inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;  // "NBDMAGIC"
inline constexpr uint64_t kIHaveOpt = 0x49484156454F5054ull;  // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ull;
inline constexpr uint32_t kRequestMagic = 0x25609513u;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698u;

// --- Handshake ------------------------------------------------------------

// Handshake flags (server, 16 bits).
inline constexpr uint16_t kFlagFixedNewstyle = 1u << 0;
inline constexpr uint16_t kFlagNoZeroes = 1u << 1;
// Client flags (32 bits).
inline constexpr uint32_t kClientFlagFixedNewstyle = 1u << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1u << 1;

// Transmission flags (16 bits).
inline constexpr uint16_t kTxHasFlags = 1u << 0;
inline constexpr uint16_t kTxReadOnly = 1u << 1;
inline constexpr uint16_t kTxSendFlush = 1u << 2;
inline constexpr uint16_t kTxSendFua = 1u << 3;
inline constexpr uint16_t kTxRotational = 1u << 4;
inline constexpr uint16_t kTxSendTrim = 1u << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1u << 6;
inline constexpr uint16_t kTxSendDf = 1u << 7;
inline constexpr uint16_t kTxCanMultiConn = 1u << 8;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 9;
inline constexpr uint32_t kOptSetMetaContext = 10;

// Option reply types.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepErrBit = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepErrBit | 1;
inline constexpr uint32_t kRepErrPolicy = kRepErrBit | 2;
inline constexpr uint32_t kRepErrInvalid = kRepErrBit | 3;
inline constexpr uint32_t kRepErrPlatform = kRepErrBit | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepErrBit | 5;
inline constexpr uint32_t kRepErrUnknown = kRepErrBit | 6;
inline constexpr uint32_t kRepErrShutdown = kRepErrBit | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepErrBit | 8;
inline constexpr uint32_t kRepErrTooBig = kRepErrBit | 9;

// NBD_REP_INFO types.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// --- Transmission ---------------------------------------------------------

inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

inline constexpr uint16_t kCmdFlagFua = 1u << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1u << 1;
inline constexpr uint16_t kCmdFlagDf = 1u << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1u << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1u << 4;

// Error values for the simple reply (the spec's fixed set, errno-numbered).
inline constexpr uint32_t kErrPerm = 1;
inline constexpr uint32_t kErrIo = 5;
inline constexpr uint32_t kErrNoMem = 12;
inline constexpr uint32_t kErrInval = 22;
inline constexpr uint32_t kErrNoSpc = 28;
inline constexpr uint32_t kErrOverflow = 75;
inline constexpr uint32_t kErrNotSup = 95;
inline constexpr uint32_t kErrShutdown = 108;

// --- Sizes ----------------------------------------------------------------

inline constexpr size_t kGreetingSize = 18;  // NBDMAGIC, IHAVEOPT, flags16
inline constexpr size_t kClientFlagsSize = 4;
inline constexpr size_t kOptionHeaderSize = 16;  // IHAVEOPT, option32, length32
inline constexpr size_t kOptionReplyHeaderSize = 20;
inline constexpr size_t kRequestSize = 28;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kExportNameReplyZeroes = 124;
// Longest option payload we accept. The spec caps strings at 4096 bytes; an
// NBD_OPT_GO carries a name plus a few header bytes and info requests.
inline constexpr uint32_t kMaxOptionLength = 4096 + 64;
inline constexpr uint32_t kMaxNameLength = 4096;

// --- Parsing --------------------------------------------------------------

enum class ParseResult : uint8_t {
  kOk,
  kIncomplete,  // fewer bytes than the fixed header: read more
  kBadMagic,
  kTooLong,       // option length above kMaxOptionLength
  kMalformed,     // inconsistent lengths inside an option payload
  kUnknownFlags,  // client flags we did not advertise
};
const char* ParseResultName(ParseResult r);

// Checks the 4-byte client flags. kOk when only flags in
// kClientFlagFixedNewstyle|kClientFlagNoZeroes are set.
ParseResult ParseClientFlags(const uint8_t* p, size_t len, uint32_t* flags);

struct OptionHeader {
  uint32_t option = 0;
  uint32_t length = 0;  // <= kMaxOptionLength on kOk
};
// Parses the 16-byte option header at p (len bytes available).
ParseResult ParseOptionHeader(const uint8_t* p, size_t len, OptionHeader* out);

// NBD_OPT_INFO / NBD_OPT_GO payload:
//   u32 name length, name, u16 count, count x u16 info type.
struct InfoRequest {
  std::string_view name;
  uint16_t num_requests = 0;
  // Bit t set when info type t (< 16) was requested; larger types are ignored.
  uint16_t requested = 0;
  bool Requested(uint16_t type) const { return type < 16 && (requested & (1u << type)) != 0; }
};
ParseResult ParseInfoRequest(const uint8_t* data, size_t len, InfoRequest* out);

// A transmission request (28 bytes).
struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};
// Parses the 28-byte request header. kBadMagic is a protocol violation: the
// stream cannot be resynchronised.
ParseResult ParseRequest(const uint8_t* p, size_t len, Request* out);
void EncodeRequest(const Request& r, uint8_t out[kRequestSize]);  // for tests and clients

// Largest READ/WRITE payload the server accepts: the spec's interoperable
// maximum (2^25). Requests above the device's max_io_size() but within this
// are split into several BlockRequests by the connection; a WRITE header
// announcing more than this is a protocol violation (the payload cannot be
// skipped cheaply) and closes the connection; a READ above it gets EINVAL.
inline constexpr uint32_t kMaxPayload = 32u << 20;

// What the export looks like to request validation.
struct ExportGeometry {
  uint64_t size = 0;
  uint32_t block_size = 512;  // power of two, the advertised minimum block size
};
// Returns 0 when `r` may be executed, else the NBD error for the reply
// (doc/proto.md "Error values"):
// - EINVAL: unknown command; a flag not valid for the command (only FUA on
//   every command and NO_HOLE on WRITE_ZEROES are accepted); zero length;
//   offset or length not a multiple of block_size; a READ or WRITE above
//   kMaxPayload; a READ or TRIM reaching beyond the end.
// - ENOSPC: a WRITE or WRITE_ZEROES reaching beyond the end ("SHOULD return
//   ENOSPC if it receives a write request including one or more sectors
//   beyond the size of the device").
// FLUSH ignores offset/length. DISC always validates (it has no reply).
uint32_t ValidateRequest(const Request& r, const ExportGeometry& g);

// True when the request is followed by `length` bytes of payload.
inline bool HasPayload(const Request& r) { return r.type == kCmdWrite; }

// --- Encoding -------------------------------------------------------------
// Handshake-phase encoders append to a std::string (handshake is not the I/O
// path); the simple reply is encoded into a caller-owned 16-byte array.

void EncodeGreeting(uint16_t handshake_flags, uint8_t out[kGreetingSize]);
void AppendOptionReply(uint32_t option, uint32_t reply_type, std::string_view data,
                       std::string* out);
// NBD_REP_SERVER for NBD_OPT_LIST: u32 name length + name.
void AppendServerReply(std::string_view name, std::string* out);
// NBD_REP_INFO / NBD_INFO_EXPORT: u64 size, u16 transmission flags.
void AppendInfoExport(uint32_t option, uint64_t size, uint16_t tx_flags, std::string* out);
// NBD_REP_INFO / NBD_INFO_NAME or NBD_INFO_DESCRIPTION: the string.
void AppendInfoString(uint32_t option, uint16_t info_type, std::string_view s, std::string* out);
// NBD_REP_INFO / NBD_INFO_BLOCK_SIZE: u32 minimum, preferred, maximum.
void AppendInfoBlockSize(uint32_t option, uint32_t min, uint32_t preferred, uint32_t max,
                         std::string* out);
// Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, 124 zero bytes unless
// the client negotiated NO_ZEROES.
void AppendExportNameReply(uint64_t size, uint16_t tx_flags, bool no_zeroes, std::string* out);

void EncodeSimpleReply(uint32_t error, uint64_t cookie, uint8_t out[kSimpleReplySize]);

const char* OptionName(uint32_t option);
const char* CommandName(uint16_t type);

}  // namespace tandem::frontend::nbd

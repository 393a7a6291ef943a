#pragma once
// ByteReader: a sequential little-endian reader over untrusted bytes (wire
// payloads, on-disk records). Every read checks the remaining length first,
// so a short input is reported as INVALID_ARGUMENT naming what was being
// read and the field ("hello: truncated at volume_id"), never overrun; after
// a failure the position does not move. Reads are the explicit helpers of
// coding.h, never casts to packed structs.
//
//   ByteReader r(payload, "hello");
//   TANDEM_RETURN_IF_ERROR(r.U64("epoch", &epoch));
//   TANDEM_RETURN_IF_ERROR(r.String16("volume_id", kMaxIdLength, &volume_id));
//   TANDEM_RETURN_IF_ERROR(r.Finish());   // no trailing bytes
//
// ByteWriter is the matching appender to a std::string.
// Not thread-safe; the input must outlive the reader.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/coding.h"
#include "common/status.h"

namespace tandem {

class ByteReader {
 public:
  // `what` names the input in errors; it must outlive the reader.
  ByteReader(std::string_view data, const char* what) : data_(data), what_(what) {}
  ByteReader(const uint8_t* data, size_t size, const char* what)
      : ByteReader(std::string_view(reinterpret_cast<const char*>(data), size), what) {}

  Status U8(const char* field, uint8_t* v) { return Fixed(field, v); }
  Status U16(const char* field, uint16_t* v) { return Fixed(field, v); }
  Status U32(const char* field, uint32_t* v) { return Fixed(field, v); }
  Status U64(const char* field, uint64_t* v) { return Fixed(field, v); }

  // A u16 length prefix, then that many bytes; a length above `limit` is
  // INVALID_ARGUMENT naming both.
  Status String16(const char* field, size_t limit, std::string* out) {
    const size_t start = pos_;
    uint16_t len = 0;
    TANDEM_RETURN_IF_ERROR(U16(field, &len));
    if (len > limit) {
      pos_ = start;
      return Status::InvalidArgument(std::string(what_) + ": " + field + " length " +
                                     std::to_string(len) + " exceeds " + std::to_string(limit));
    }
    if (remaining() < len) {
      pos_ = start;
      return Truncated(field);
    }
    out->assign(data_.data() + pos_, len);
    pos_ += len;
    return Status::Ok();
  }

  // The next `n` bytes, as a view into the input.
  Status Bytes(const char* field, size_t n, std::string_view* out) {
    if (remaining() < n) return Truncated(field);
    *out = data_.substr(pos_, n);
    pos_ += n;
    return Status::Ok();
  }

  Status Skip(const char* field, size_t n) {
    std::string_view ignored;
    return Bytes(field, n, &ignored);
  }

  size_t pos() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }

  // OK when everything was read; INVALID_ARGUMENT counting the trailing bytes.
  Status Finish() const {
    if (remaining() == 0) return Status::Ok();
    return Status::InvalidArgument(std::string(what_) + ": " + std::to_string(remaining()) +
                                   " trailing bytes");
  }

 private:
  template <typename T>
  Status Fixed(const char* field, T* v) {
    if (remaining() < sizeof(T)) return Truncated(field);
    const auto* p = reinterpret_cast<const uint8_t*>(data_.data() + pos_);
    if constexpr (sizeof(T) == 1) {
      *v = *p;
    } else if constexpr (sizeof(T) == 2) {
      *v = DecodeFixed16(p);
    } else if constexpr (sizeof(T) == 4) {
      *v = DecodeFixed32(p);
    } else {
      *v = DecodeFixed64(p);
    }
    pos_ += sizeof(T);
    return Status::Ok();
  }

  Status Truncated(const char* field) const {
    return Status::InvalidArgument(std::string(what_) + ": truncated at " + field);
  }

  std::string_view data_;
  const char* what_;
  size_t pos_ = 0;
};

// Appends little-endian values to a string (payloads, records).
class ByteWriter {
 public:
  explicit ByteWriter(std::string* out) : out_(out) {}

  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Put(v, EncodeFixed16); }
  void U32(uint32_t v) { Put(v, EncodeFixed32); }
  void U64(uint64_t v) { Put(v, EncodeFixed64); }
  // REQUIRES: s.size() <= 65535 (callers validate lengths first).
  void String16(std::string_view s) {
    U16(static_cast<uint16_t>(s.size()));
    out_->append(s);
  }
  void Bytes(std::string_view s) { out_->append(s); }

 private:
  template <typename T, typename Encode>
  void Put(T v, Encode encode) {
    uint8_t b[sizeof(T)];
    encode(b, v);
    out_->append(reinterpret_cast<const char*>(b), sizeof(T));
  }

  std::string* out_;
};

}  // namespace tandem

#include "replica-engine/replica/replica_metadata.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <string_view>
#include <utility>

#include "common/bits.h"
#include "common/byte_reader.h"
#include "common/coding.h"
#include "common/crc32c.h"
#include "common/file_util.h"
#include "common/logging.h"

namespace tandem::replica {
namespace {

constexpr char kTag[] = "replica";
constexpr char kMagic[8] = {'T', 'N', 'D', 'M', 'M', 'E', 'T', 'A'};
// Version 2 appended tracking_dirty to the fields, version 3
// dirty_since_generation, rebuild_cursor and rebuild_generation, version 4
// the generation ids, epoch_owner and the activity log; versions 1 to 3 are
// still read.
constexpr uint32_t kFormatVersion = kMetadataFormatVersion;
constexpr uint32_t kOldestReadableVersion = 1;

// Fixed prefix of every slot; see docs/replica_metadata.md.
constexpr size_t kMagicOffset = 0;
constexpr size_t kVersionOffset = 8;
constexpr size_t kHeaderLengthOffset = 12;
constexpr size_t kTotalLengthOffset = 16;
constexpr size_t kCrcOffset = 20;
constexpr size_t kSequenceOffset = 24;
constexpr size_t kFieldsOffset = 32;

constexpr size_t kMaxIdLength = 128;
constexpr size_t kMaxDataPathLength = 1024;
constexpr uint32_t kMinBlockSize = 512;
constexpr uint32_t kMaxBlockSize = 65536;
// The header (fixed prefix + fields) always fits this, whatever the strings.
constexpr size_t kHeaderArea = 4096;
constexpr size_t kSlotAlignment = 4096;

// ceil(ceil(size / region) / 8) without overflowing for sizes near 2^64.
uint64_t DirtyMapBytes(uint64_t size, uint32_t region) {
  if (region == 0) return 0;
  uint64_t regions = size / region + (size % region != 0 ? 1 : 0);
  return regions / 8 + (regions % 8 != 0 ? 1 : 0);
}

// Header length of a record written in `version`.
size_t HeaderLength(const ReplicaMetadata& md, uint32_t version) {
  return kFieldsOffset + 2 + md.volume_id.size() + 2 + md.replica_id.size() + 2 +
         md.data_path.size() + 8 /*size*/ + 4 /*block_size*/ + 8 /*generation*/ +
         8 /*highest_epoch*/ + 1 /*clean_shutdown*/ + 4 /*dirty_region_size*/ +
         4 /*dirty_map_bytes*/ + (version >= 2 ? 1 /*tracking_dirty*/ : 0) +
         (version >= 3
              ? 8 /*dirty_since_generation*/ + 8 /*rebuild_cursor*/ + 8 /*rebuild_generation*/
              : 0) +
         (version >= 4
              ? 8 /*generation_id*/ + 1 /*history_count*/ + 8 * md.generation_history.size() +
                    8 /*epoch_owner*/ + 4 /*activity_extent_size*/ + 4 /*activity_map_bytes*/
              : 0);
}

// The field checks shared by Encode and Decode, so that everything Decode
// accepts re-encodes (the fuzzer relies on it). `map_bytes` is the bitmap
// length the record carries, `activity_bytes` the activity map's.
Status ValidateFields(const ReplicaMetadata& md, uint64_t map_bytes, uint64_t activity_bytes) {
  if (md.volume_id.size() > kMaxIdLength) return Status::InvalidArgument("volume_id too long");
  if (md.replica_id.size() > kMaxIdLength) return Status::InvalidArgument("replica_id too long");
  if (md.data_path.size() > kMaxDataPathLength) {
    return Status::InvalidArgument("data_path too long");
  }
  if (!IsPowerOfTwo(md.block_size) || md.block_size < kMinBlockSize ||
      md.block_size > kMaxBlockSize) {
    return Status::InvalidArgument("block_size " + std::to_string(md.block_size) +
                                   " is not a power of two in [512, 65536]");
  }
  if (md.size == 0 || md.size % md.block_size != 0) {
    return Status::InvalidArgument("size " + std::to_string(md.size) +
                                   " is not a positive multiple of block_size");
  }
  if (md.dirty_region_size != 0 &&
      (!IsPowerOfTwo(md.dirty_region_size) || md.dirty_region_size < md.block_size)) {
    return Status::InvalidArgument("dirty_region_size " + std::to_string(md.dirty_region_size) +
                                   " is not 0 or a power of two >= block_size");
  }
  uint64_t want = DirtyMapBytes(md.size, md.dirty_region_size);
  if (want > UINT32_MAX) return Status::InvalidArgument("dirty map too large");
  if (md.tracking_dirty && md.dirty_region_size == 0) {
    return Status::InvalidArgument("tracking_dirty set without a dirty map");
  }
  if (!md.tracking_dirty && md.dirty_since_generation != 0) {
    return Status::InvalidArgument("dirty_since_generation set while not tracking");
  }
  if (md.dirty_since_generation > md.generation) {
    return Status::InvalidArgument("dirty_since_generation " +
                                   std::to_string(md.dirty_since_generation) +
                                   " is above the generation " + std::to_string(md.generation));
  }
  if (md.rebuild_cursor > md.size) {
    return Status::InvalidArgument("rebuild_cursor " + std::to_string(md.rebuild_cursor) +
                                   " is beyond the size");
  }
  if (md.rebuild_cursor == 0 && md.rebuild_generation != 0) {
    return Status::InvalidArgument("rebuild_generation set without a rebuild_cursor");
  }
  if (map_bytes != want) {
    return Status::InvalidArgument("dirty map has " + std::to_string(map_bytes) +
                                   " bytes, expected " + std::to_string(want));
  }
  if (md.generation_history.size() > kMaxGenerationHistory) {
    return Status::InvalidArgument(std::to_string(md.generation_history.size()) +
                                   " generation history ids exceed " +
                                   std::to_string(kMaxGenerationHistory));
  }
  if (md.generation_id == 0 && !md.generation_history.empty()) {
    return Status::InvalidArgument("generation history without a generation_id");
  }
  for (uint64_t id : md.generation_history) {
    if (id == 0) return Status::InvalidArgument("a generation history id is 0");
  }
  const uint32_t al = md.activity_extent_size;
  if (al != 0 && (!IsPowerOfTwo(al) || al < md.block_size || al < md.dirty_region_size)) {
    return Status::InvalidArgument("activity_extent_size " + std::to_string(al) +
                                   " is not 0 or a power of two >= block_size and "
                                   ">= dirty_region_size");
  }
  const uint64_t want_al = DirtyMapBytes(md.size, al);
  if (want_al > UINT32_MAX - want) return Status::InvalidArgument("activity map too large");
  if (activity_bytes != want_al) {
    return Status::InvalidArgument("activity map has " + std::to_string(activity_bytes) +
                                   " bytes, expected " + std::to_string(want_al));
  }
  return Status::Ok();
}

// CRC-32C of slot[0, total) with the crc field read as zero.
uint32_t SlotCrc(const uint8_t* p, size_t total) {
  static const uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t crc = Crc32cExtend(0, p, kCrcOffset);
  crc = Crc32cExtend(crc, kZero, sizeof(kZero));
  return Crc32cExtend(crc, p + kCrcOffset + 4, total - kCrcOffset - 4);
}

// The raw field values of a slot, before they are checked.
struct RawFields {
  uint8_t clean = 0;
  uint8_t tracking = 0;
  uint32_t map_bytes = 0;
  uint32_t activity_bytes = 0;
};

// Reads the fields of a slot of `version` into *m and *raw. A short or
// over-long field is INVALID_ARGUMENT (the caller reports "malformed
// fields"); a too-long history is DATA_LOSS naming it.
Status DecodeFields(ByteReader* r, uint32_t version, ReplicaMetadata* m, RawFields* raw) {
  TANDEM_RETURN_IF_ERROR(r->String16("volume_id", kMaxIdLength, &m->volume_id));
  TANDEM_RETURN_IF_ERROR(r->String16("replica_id", kMaxIdLength, &m->replica_id));
  TANDEM_RETURN_IF_ERROR(r->String16("data_path", kMaxDataPathLength, &m->data_path));
  TANDEM_RETURN_IF_ERROR(r->U64("size", &m->size));
  TANDEM_RETURN_IF_ERROR(r->U32("block_size", &m->block_size));
  TANDEM_RETURN_IF_ERROR(r->U64("generation", &m->generation));
  TANDEM_RETURN_IF_ERROR(r->U64("highest_epoch", &m->highest_epoch));
  TANDEM_RETURN_IF_ERROR(r->U8("clean_shutdown", &raw->clean));
  TANDEM_RETURN_IF_ERROR(r->U32("dirty_region_size", &m->dirty_region_size));
  TANDEM_RETURN_IF_ERROR(r->U32("dirty_map_bytes", &raw->map_bytes));
  if (version >= 2) TANDEM_RETURN_IF_ERROR(r->U8("tracking_dirty", &raw->tracking));
  if (version >= 3) {
    TANDEM_RETURN_IF_ERROR(r->U64("dirty_since_generation", &m->dirty_since_generation));
    TANDEM_RETURN_IF_ERROR(r->U64("rebuild_cursor", &m->rebuild_cursor));
    TANDEM_RETURN_IF_ERROR(r->U64("rebuild_generation", &m->rebuild_generation));
  }
  if (version >= 4) {
    TANDEM_RETURN_IF_ERROR(r->U64("generation_id", &m->generation_id));
    uint8_t count = 0;
    TANDEM_RETURN_IF_ERROR(r->U8("history_count", &count));
    if (count > kMaxGenerationHistory) return Status::DataLoss("generation history too long");
    m->generation_history.resize(count);
    for (uint8_t i = 0; i < count; ++i) {
      TANDEM_RETURN_IF_ERROR(r->U64("generation_history", &m->generation_history[i]));
    }
    TANDEM_RETURN_IF_ERROR(r->U64("epoch_owner", &m->epoch_owner));
    TANDEM_RETURN_IF_ERROR(r->U32("activity_extent_size", &m->activity_extent_size));
    TANDEM_RETURN_IF_ERROR(r->U32("activity_bytes", &raw->activity_bytes));
  }
  return Status::Ok();
}

void PutString(uint8_t* p, size_t* pos, const std::string& s) {
  EncodeFixed16(p + *pos, static_cast<uint16_t>(s.size()));
  std::memcpy(p + *pos + 2, s.data(), s.size());
  *pos += 2 + s.size();
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

Status WriteAll(int fd, const void* data, size_t n, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return PosixError("pwrite " + path, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

// Short reads (file shrunk under us) are reported as DATA_LOSS: the caller
// sized the read from fstat.
Status ReadAll(int fd, void* data, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return PosixError("pread " + path, errno);
    }
    if (r == 0) return Status::DataLoss(path + ": unexpected end of file");
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

}  // namespace

size_t MetadataSlotSize(uint64_t size, uint32_t dirty_region_size, uint32_t activity_extent_size) {
  uint64_t map = DirtyMapBytes(size, dirty_region_size) + DirtyMapBytes(size, activity_extent_size);
  return kHeaderArea + (map + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
}

Status EncodeMetadataSlot(const ReplicaMetadata& md, uint64_t seq, size_t slot_size,
                          std::string* out) {
  std::string image(slot_size, '\0');
  TANDEM_RETURN_IF_ERROR(
      EncodeMetadataSlotTo(md, seq, slot_size, reinterpret_cast<uint8_t*>(image.data())));
  *out = std::move(image);
  return Status::Ok();
}

Status EncodeMetadataSlotTo(const ReplicaMetadata& md, uint64_t seq, size_t slot_size, uint8_t* p) {
  TANDEM_RETURN_IF_ERROR(ValidateFields(md, md.dirty_map.size(), md.activity_map.size()));
  const size_t header = HeaderLength(md, kFormatVersion);
  const size_t total = header + md.dirty_map.size() + md.activity_map.size();
  if (total > slot_size) {
    return Status::InvalidArgument("metadata needs " + std::to_string(total) + " bytes, slot has " +
                                   std::to_string(slot_size));
  }
  std::memset(p, 0, slot_size);
  std::memcpy(p + kMagicOffset, kMagic, sizeof(kMagic));
  EncodeFixed32(p + kVersionOffset, kFormatVersion);
  EncodeFixed32(p + kHeaderLengthOffset, static_cast<uint32_t>(header));
  EncodeFixed32(p + kTotalLengthOffset, static_cast<uint32_t>(total));
  EncodeFixed64(p + kSequenceOffset, seq);
  size_t pos = kFieldsOffset;
  PutString(p, &pos, md.volume_id);
  PutString(p, &pos, md.replica_id);
  PutString(p, &pos, md.data_path);
  EncodeFixed64(p + pos, md.size);
  pos += 8;
  EncodeFixed32(p + pos, md.block_size);
  pos += 4;
  EncodeFixed64(p + pos, md.generation);
  pos += 8;
  EncodeFixed64(p + pos, md.highest_epoch);
  pos += 8;
  p[pos++] = md.clean_shutdown ? 1 : 0;
  EncodeFixed32(p + pos, md.dirty_region_size);
  pos += 4;
  EncodeFixed32(p + pos, static_cast<uint32_t>(md.dirty_map.size()));
  pos += 4;
  p[pos++] = md.tracking_dirty ? 1 : 0;
  EncodeFixed64(p + pos, md.dirty_since_generation);
  pos += 8;
  EncodeFixed64(p + pos, md.rebuild_cursor);
  pos += 8;
  EncodeFixed64(p + pos, md.rebuild_generation);
  pos += 8;
  EncodeFixed64(p + pos, md.generation_id);
  pos += 8;
  p[pos++] = static_cast<uint8_t>(md.generation_history.size());
  for (uint64_t id : md.generation_history) {
    EncodeFixed64(p + pos, id);
    pos += 8;
  }
  EncodeFixed64(p + pos, md.epoch_owner);
  pos += 8;
  EncodeFixed32(p + pos, md.activity_extent_size);
  pos += 4;
  EncodeFixed32(p + pos, static_cast<uint32_t>(md.activity_map.size()));
  pos += 4;
  if (!md.dirty_map.empty()) std::memcpy(p + pos, md.dirty_map.data(), md.dirty_map.size());
  pos += md.dirty_map.size();
  if (!md.activity_map.empty()) {
    std::memcpy(p + pos, md.activity_map.data(), md.activity_map.size());
  }
  EncodeFixed32(p + kCrcOffset, SlotCrc(p, total));
  return Status::Ok();
}

Status DecodeMetadataSlot(const void* data, size_t n, ReplicaMetadata* md, uint64_t* seq) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (n < kFieldsOffset) return Status::DataLoss("slot shorter than its fixed header");
  if (std::memcmp(p + kMagicOffset, kMagic, sizeof(kMagic)) != 0) {
    return Status::DataLoss("bad magic");
  }
  uint32_t version = DecodeFixed32(p + kVersionOffset);
  if (version < kOldestReadableVersion || version > kFormatVersion) {
    return Status::DataLoss("unsupported format version " + std::to_string(version));
  }
  const size_t header = DecodeFixed32(p + kHeaderLengthOffset);
  const size_t total = DecodeFixed32(p + kTotalLengthOffset);
  if (header < kFieldsOffset || header > kHeaderArea || total < header || total > n) {
    return Status::DataLoss("bad lengths: header " + std::to_string(header) + ", total " +
                            std::to_string(total) + ", slot " + std::to_string(n));
  }
  // Checked before parsing so a torn slot is reported as such, not as whatever
  // field happened to be garbled first.
  uint32_t stored_crc = DecodeFixed32(p + kCrcOffset);
  uint32_t crc = SlotCrc(p, total);
  if (crc != stored_crc) return Status::DataLoss("crc mismatch");

  ReplicaMetadata m;
  RawFields raw;
  ByteReader r(p + kFieldsOffset, header - kFieldsOffset, "metadata fields");
  if (Status st = DecodeFields(&r, version, &m, &raw); !st.ok() || r.remaining() != 0) {
    return st.code() == StatusCode::kDataLoss ? st : Status::DataLoss("malformed fields");
  }
  if (raw.clean > 1) return Status::DataLoss("bad clean_shutdown value");
  if (raw.tracking > 1) return Status::DataLoss("bad tracking_dirty value");
  m.clean_shutdown = raw.clean != 0;
  m.tracking_dirty = raw.tracking != 0;
  // Before version 3 the start of tracking was not recorded: the current
  // generation is the latest it can have been (see the header).
  if (version < 3 && m.tracking_dirty) m.dirty_since_generation = m.generation;
  if (Status st = ValidateFields(m, raw.map_bytes, raw.activity_bytes); !st.ok()) {
    return Status::DataLoss(st.message());
  }
  if (total != header + uint64_t{raw.map_bytes} + raw.activity_bytes) {
    return Status::DataLoss("total length mismatch");
  }
  // The encoder zero-fills the rest of the slot; anything else there means the
  // slot was damaged (outside the crc's reach) or not written by us.
  if (!AllZero(p + total, n - total)) return Status::DataLoss("non-zero padding");
  m.dirty_map.assign(p + header, p + header + raw.map_bytes);
  m.activity_map.assign(p + header + raw.map_bytes, p + total);
  *md = std::move(m);
  *seq = DecodeFixed64(p + kSequenceOffset);
  return Status::Ok();
}

MetadataFile::MetadataFile(std::string path, UniqueFd fd, size_t slot_size, ReplicaMetadata md,
                           uint64_t seq, int current_slot)
    : path_(std::move(path)),
      fd_(std::move(fd)),
      slot_size_(slot_size),
      current_(std::move(md)),
      seq_(seq),
      current_slot_(current_slot) {}

Result<std::unique_ptr<MetadataFile>> MetadataFile::Create(const std::string& path,
                                                           const ReplicaMetadata& md) {
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size, md.activity_extent_size);
  std::string image;
  TANDEM_RETURN_IF_ERROR(EncodeMetadataSlot(md, 1, slot_size, &image));
  // Slot 1 stays zero ("never written") until the first Update.
  image.resize(2 * slot_size, '\0');

  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return PosixError("create " + path, errno);
  Status st = WriteAll(fd.get(), image.data(), image.size(), 0, path);
  // fsync, not fdatasync: the new file's size and allocation must be durable.
  if (st.ok() && ::fsync(fd.get()) != 0) st = PosixError("fsync " + path, errno);
  if (st.ok()) st = SyncDir(DirName(path));  // the new entry
  if (!st.ok()) {
    // Our O_EXCL create succeeded, so the file is ours to remove.
    ::unlink(path.c_str());
    return st;
  }
  return std::unique_ptr<MetadataFile>(
      new MetadataFile(path, std::move(fd), slot_size, md, /*seq=*/1, /*current_slot=*/0));
}

Result<std::unique_ptr<MetadataFile>> MetadataFile::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open " + path, errno);
  struct stat sb;
  if (::fstat(fd.get(), &sb) != 0) return PosixError("fstat " + path, errno);
  // The file is exactly two equal slots, each a multiple of 4 KiB; any other
  // size means truncation or a foreign file.
  const uint64_t file_size = static_cast<uint64_t>(sb.st_size);
  if (file_size == 0 || file_size % (2 * kSlotAlignment) != 0) {
    return Status::DataLoss(path + ": bad metadata file size " + std::to_string(file_size));
  }
  const size_t slot_size = file_size / 2;

  std::string buf(slot_size, '\0');
  ReplicaMetadata mds[2];
  uint64_t seqs[2] = {0, 0};
  Status why[2];
  bool blank[2] = {false, false};
  for (int i = 0; i < 2; ++i) {
    TANDEM_RETURN_IF_ERROR(ReadAll(fd.get(), buf.data(), slot_size, i * slot_size, path));
    why[i] = DecodeMetadataSlot(buf.data(), slot_size, &mds[i], &seqs[i]);
    if (why[i].ok() && MetadataSlotSize(mds[i].size, mds[i].dirty_region_size,
                                        mds[i].activity_extent_size) != slot_size) {
      why[i] = Status::DataLoss("slot size " + std::to_string(slot_size) +
                                " does not match the volume size");
    }
    if (!why[i].ok()) blank[i] = AllZero(reinterpret_cast<const uint8_t*>(buf.data()), slot_size);
  }

  if (!why[0].ok() && !why[1].ok()) {
    return Status::DataLoss(path + ": no valid metadata slot (slot 0: " + why[0].message() +
                            "; slot 1: " + why[1].message() + ")");
  }
  int pick;
  if (why[0].ok() && why[1].ok()) {
    pick = seqs[1] > seqs[0] ? 1 : 0;
  } else {
    pick = why[0].ok() ? 0 : 1;
    int bad = 1 - pick;
    // An all-zero slot is the one Create() leaves unwritten, not damage.
    if (!blank[bad]) {
      TLOG_WARN(kTag, "%s: metadata slot %d is invalid (%s); using slot %d (sequence %" PRIu64 ")",
                path.c_str(), bad, why[bad].message().c_str(), pick, seqs[pick]);
    }
  }
  return std::unique_ptr<MetadataFile>(
      new MetadataFile(path, std::move(fd), slot_size, std::move(mds[pick]), seqs[pick], pick));
}

Status MetadataFile::WriteNextSlot(const ReplicaMetadata& md) {
  const int target = 1 - current_slot_;
  // A fresh image per update: updates are rare (each pays an fdatasync, which
  // dwarfs the allocation), and keeping a slot-sized scratch buffer would
  // double the resident size of a large dirty map.
  std::string image;
  TANDEM_RETURN_IF_ERROR(EncodeMetadataSlot(md, seq_ + 1, slot_size_, &image));
  TANDEM_RETURN_IF_ERROR(
      WriteAll(fd_.get(), image.data(), image.size(), target * slot_size_, path_));
  if (::fdatasync(fd_.get()) != 0) return PosixError("fdatasync " + path_, errno);
  seq_ += 1;
  current_slot_ = target;
  return Status::Ok();
}

Status MetadataFile::Update(const ReplicaMetadata& md) {
  if (md.size != current_.size || md.dirty_region_size != current_.dirty_region_size ||
      md.activity_extent_size != current_.activity_extent_size) {
    return Status::InvalidArgument(
        "metadata update may not change size, dirty_region_size or activity_extent_size");
  }
  TANDEM_RETURN_IF_ERROR(WriteNextSlot(md));
  current_ = md;
  return Status::Ok();
}

Status MetadataFile::Sync() { return WriteNextSlot(current_); }

Status MetadataFile::Replace(const ReplicaMetadata& md) {
  if (md.dirty_region_size != current_.dirty_region_size ||
      md.activity_extent_size != current_.activity_extent_size) {
    return Status::InvalidArgument(
        "metadata replace may not change dirty_region_size or activity_extent_size");
  }
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size, md.activity_extent_size);
  std::string image;
  TANDEM_RETURN_IF_ERROR(EncodeMetadataSlot(md, seq_ + 1, slot_size, &image));
  image.resize(2 * slot_size, '\0');  // slot 1: never written, as after Create
  TANDEM_RETURN_IF_ERROR(WriteFileAtomically(path_, image, 0600));
  // The new file is the record now, whatever happens next.
  fd_.Reset(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  const int open_errno = errno;
  slot_size_ = slot_size;
  current_ = md;
  seq_ += 1;
  current_slot_ = 0;
  // Without a handle every later update fails (EBADF) instead of writing the
  // replaced, unlinked file; the next Open reads the new one.
  if (!fd_.valid()) return PosixError("reopen " + path_ + " after replacing it", open_errno);
  return Status::Ok();
}

Status MetadataFile::EncodeNext(uint8_t* buf) const {
  return EncodeMetadataSlotTo(current_, seq_ + 1, slot_size_, buf);
}

void MetadataFile::CommitNext() {
  seq_ += 1;
  current_slot_ = 1 - current_slot_;
}

}  // namespace tandem::replica

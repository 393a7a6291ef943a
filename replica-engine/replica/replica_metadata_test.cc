#include "replica-engine/replica/replica_metadata.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "common/coding.h"
#include "common/crc32c.h"

namespace tandem::replica {
namespace {

uint64_t DirtyMapBytesForTest(uint64_t size, uint32_t region) {
  const uint64_t regions = (size + region - 1) / region;
  return (regions + 7) / 8;
}

ReplicaMetadata SampleMetadata() {
  ReplicaMetadata md;
  md.volume_id = "vol-1";
  md.replica_id = "r1";
  md.data_path = "/dev/disk/by-id/nvme-example";
  md.size = 1ull << 30;  // 1 GiB / 64 KiB = 16384 regions = 2048 map bytes
  md.block_size = 4096;
  md.generation = 7;
  md.highest_epoch = 42;
  md.clean_shutdown = true;
  md.dirty_region_size = 64 * 1024;
  md.dirty_map.assign(2048, 0);
  md.dirty_map[0] = 0x81;
  md.dirty_map[1000] = 0x10;
  md.dirty_map[2047] = 0xff;
  return md;
}

class MetadataFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-metadata-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/meta";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Overwrites `n` bytes at `offset` of the file with 0xAB.
  void Corrupt(uint64_t offset, size_t n) {
    int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::string junk(n, '\xab');
    ASSERT_EQ(::pwrite(fd, junk.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
    ::close(fd);
  }

  std::string dir_;
  std::string path_;
};

TEST(MetadataSlotTest, SlotSize) {
  EXPECT_EQ(MetadataSlotSize(1ull << 30, 0), 4096u);
  EXPECT_EQ(MetadataSlotSize(1ull << 30, 64 * 1024), 8192u);               // 2048 map bytes
  EXPECT_EQ(MetadataSlotSize(4096, 4096), 8192u);                          // 1 bit -> 1 byte
  EXPECT_EQ(MetadataSlotSize(1ull << 40, 64 * 1024), 4096u + (2u << 20));  // 2 MiB map
  // A partial last region still gets a bit.
  EXPECT_EQ(MetadataSlotSize(65 * 4096, 64 * 1024), 8192u);
}

TEST(MetadataSlotTest, RoundTrip) {
  ReplicaMetadata md = SampleMetadata();
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 12345, slot_size, &image).ok());
  ASSERT_EQ(image.size(), slot_size);
  EXPECT_EQ(image.substr(0, 8), "TNDMMETA");

  ReplicaMetadata out;
  uint64_t seq = 0;
  Status st = DecodeMetadataSlot(image.data(), image.size(), &out, &seq);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(out, md);
  EXPECT_EQ(seq, 12345u);
}

TEST(MetadataSlotTest, RoundTripWithoutDirtyMap) {
  ReplicaMetadata md;
  md.volume_id = "v";
  md.replica_id = "";
  md.size = 512;
  md.block_size = 512;
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 1, 4096, &image).ok());
  ReplicaMetadata out;
  uint64_t seq = 0;
  ASSERT_TRUE(DecodeMetadataSlot(image.data(), image.size(), &out, &seq).ok());
  EXPECT_EQ(out, md);
}

TEST(MetadataSlotTest, TrackingDirtyRoundTripsInVersion2) {
  ReplicaMetadata md = SampleMetadata();
  md.tracking_dirty = true;
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 3, slot_size, &image).ok());
  EXPECT_EQ(DecodeFixed32(reinterpret_cast<const uint8_t*>(image.data()) + 8),
            kMetadataFormatVersion);
  ReplicaMetadata out;
  uint64_t seq = 0;
  ASSERT_TRUE(DecodeMetadataSlot(image.data(), image.size(), &out, &seq).ok());
  EXPECT_TRUE(out.tracking_dirty);
  EXPECT_EQ(out, md);
}

// Bytes the fields of format versions after `version` add to the header
// (with an empty generation history): version 4 adds generation_id,
// history_count, epoch_owner, activity_extent_size and the activity map
// length (25), version 3 dirty_since_generation, rebuild_cursor and
// rebuild_generation (24), version 2 tracking_dirty (1).
uint32_t FieldsAfter(uint32_t version) {
  return (version < 4 ? 25 : 0) + (version < 3 ? 24 : 0) + (version < 2 ? 1 : 0);
}

// Rewrites a current-version image in an older format `version`, dropping
// the fields the later versions appended. Those fields must hold their
// defaults to have an older form.
std::string ToVersion(std::string image, uint32_t version) {
  auto* p = reinterpret_cast<uint8_t*>(image.data());
  const uint32_t header = DecodeFixed32(p + 12);
  const uint32_t total = DecodeFixed32(p + 16);
  const uint32_t cut = FieldsAfter(version);
  for (uint32_t i = header - cut; i < header; ++i) {
    EXPECT_EQ(p[i], 0) << "field at " << i << " must be 0 to have a version-" << version << " form";
  }
  image.erase(header - cut, cut);
  image.append(cut, '\0');  // keep the slot size
  p = reinterpret_cast<uint8_t*>(image.data());
  EncodeFixed32(p + 8, version);
  EncodeFixed32(p + 12, header - cut);
  EncodeFixed32(p + 16, total - cut);
  EncodeFixed32(p + 20, 0);
  EncodeFixed32(p + 20, Crc32c(p, total - cut));
  return image;
}
std::string ToVersion1(std::string image) { return ToVersion(std::move(image), 1); }

TEST(MetadataSlotTest, Version1SlotsStillDecodeWithTrackingOff) {
  ReplicaMetadata md = SampleMetadata();
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 9, slot_size, &image).ok());
  std::string v1 = ToVersion1(image);
  ReplicaMetadata out;
  uint64_t seq = 0;
  Status st = DecodeMetadataSlot(v1.data(), v1.size(), &out, &seq);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(out, md);
  EXPECT_FALSE(out.tracking_dirty);
  EXPECT_EQ(seq, 9u);
  // A version-1 header with a tracking byte appended is malformed, and
  // versions outside [1, current] are refused.
  std::string bad = image;
  EncodeFixed32(reinterpret_cast<uint8_t*>(bad.data()) + 8, kMetadataFormatVersion + 1);
  EXPECT_EQ(DecodeMetadataSlot(bad.data(), bad.size(), &out, &seq).code(), StatusCode::kDataLoss);
  // A version-1 file is upgraded by the first update.
  char tmpl[] = "/var/tmp/tandem-metadata-v1-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/meta";
  {
    std::string file = v1 + std::string(slot_size, '\0');
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, file.data(), file.size()), static_cast<ssize_t>(file.size()));
    ::close(fd);
  }
  auto f = MetadataFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->current(), md);
  ReplicaMetadata tracked = md;
  tracked.tracking_dirty = true;
  ASSERT_TRUE((*f)->Update(tracked).ok());
  f->reset();
  auto g = MetadataFile::Open(path);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE((*g)->current().tracking_dirty);
  std::filesystem::remove_all(tmpl);
}

TEST(MetadataSlotTest, RebuildFieldsRoundTripInVersion3) {
  ReplicaMetadata md = SampleMetadata();
  md.generation = 9;
  md.tracking_dirty = true;
  md.dirty_since_generation = 7;
  md.rebuild_cursor = md.size / 2;
  md.rebuild_generation = 8;
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 4, slot_size, &image).ok());
  EXPECT_EQ(DecodeFixed32(reinterpret_cast<const uint8_t*>(image.data()) + 8),
            kMetadataFormatVersion);
  ReplicaMetadata out;
  uint64_t seq = 0;
  ASSERT_TRUE(DecodeMetadataSlot(image.data(), image.size(), &out, &seq).ok());
  EXPECT_EQ(out, md);
  EXPECT_EQ(out.dirty_since_generation, 7u);
  EXPECT_EQ(out.rebuild_cursor, md.size / 2);
  EXPECT_EQ(out.rebuild_generation, 8u);
  // The same record in version 3 (no generation ids, owner, activity log).
  std::string v3 = ToVersion(image, 3);
  ASSERT_TRUE(DecodeMetadataSlot(v3.data(), v3.size(), &out, &seq).ok());
  EXPECT_EQ(out, md);
  EXPECT_EQ(out.rebuild_cursor, md.size / 2);
}

TEST(MetadataSlotTest, GenerationIdsOwnerAndActivityMapRoundTripInVersion4) {
  ReplicaMetadata md = SampleMetadata();
  md.generation_id = 0x1234567890ABCDEFull;
  md.generation_history = {3, 2, 0xFFFFFFFFFFFFFFFFull};
  md.epoch_owner = 0x5555AAAA5555AAAAull;
  md.activity_extent_size = 4u << 20;  // 1 GiB / 4 MiB = 256 extents = 32 bytes
  md.activity_map.assign(32, 0);
  md.activity_map[0] = 0x01;
  md.activity_map[31] = 0x80;
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size, md.activity_extent_size);
  EXPECT_EQ(slot_size, 4096u + 4096u);  // 2048 + 32 map bytes
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 6, slot_size, &image).ok());
  ReplicaMetadata out;
  uint64_t seq = 0;
  Status st = DecodeMetadataSlot(image.data(), image.size(), &out, &seq);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(out, md);
  EXPECT_EQ(out.generation_history.size(), 3u);
  EXPECT_EQ(out.activity_map[31], 0x80);
  // The activity map follows the dirty map.
  const uint32_t header = DecodeFixed32(reinterpret_cast<const uint8_t*>(image.data()) + 12);
  EXPECT_EQ(static_cast<uint8_t>(image[header + 2048]), 0x01);
  EXPECT_EQ(static_cast<uint8_t>(image[header + 2048 + 31]), 0x80);

  // Refused: too long a history, a zero id in it, a history without an id,
  // an activity extent smaller than the dirty region or not a power of two,
  // an activity map of the wrong length.
  auto refused = [&](const ReplicaMetadata& m) {
    return EncodeMetadataSlot(m, 1, 1 << 20, &image).code() == StatusCode::kInvalidArgument;
  };
  ReplicaMetadata bad = md;
  bad.generation_history.assign(kMaxGenerationHistory + 1, 9);
  EXPECT_TRUE(refused(bad));
  bad = md;
  bad.generation_history[2] = 0;
  EXPECT_TRUE(refused(bad));
  bad = md;
  bad.generation_id = 0;
  EXPECT_TRUE(refused(bad));
  bad = md;
  bad.activity_extent_size = 32 * 1024;
  bad.activity_map.assign(DirtyMapBytesForTest(md.size, 32 * 1024), 0);
  EXPECT_TRUE(refused(bad));
  bad = md;
  bad.activity_extent_size = 3u << 20;
  EXPECT_TRUE(refused(bad));
  bad = md;
  bad.activity_map.resize(31);
  EXPECT_TRUE(refused(bad));
  // A history of exactly kMaxGenerationHistory is fine.
  bad = md;
  bad.generation_history.assign(kMaxGenerationHistory, 9);
  EXPECT_FALSE(refused(bad));
}

TEST(MetadataSlotTest, Version2SlotsDecodeWithoutCursorAndTrackingSinceTheirGeneration) {
  ReplicaMetadata md = SampleMetadata();
  md.generation = 12;
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 5, slot_size, &image).ok());
  std::string v2 = ToVersion(image, 2);
  ReplicaMetadata out;
  uint64_t seq = 0;
  ASSERT_TRUE(DecodeMetadataSlot(v2.data(), v2.size(), &out, &seq).ok());
  EXPECT_EQ(out, md);
  EXPECT_EQ(seq, 5u);
  // A version-2 record that was tracking: when tracking started is unknown;
  // the current generation is the latest it can have been.
  uint8_t* p = reinterpret_cast<uint8_t*>(v2.data());
  const uint32_t header = DecodeFixed32(p + 12);
  const uint32_t total = DecodeFixed32(p + 16);
  p[header - 1] = 1;  // tracking_dirty
  EncodeFixed32(p + 20, 0);
  EncodeFixed32(p + 20, Crc32c(p, total));
  ASSERT_TRUE(DecodeMetadataSlot(v2.data(), v2.size(), &out, &seq).ok());
  EXPECT_TRUE(out.tracking_dirty);
  EXPECT_EQ(out.dirty_since_generation, 12u);
  EXPECT_EQ(out.rebuild_cursor, 0u);
}

TEST(MetadataSlotTest, EncodeRejectsBadFields) {
  std::string image;
  auto encode = [&](const ReplicaMetadata& md) {
    return EncodeMetadataSlot(md, 1, 1 << 20, &image).code();
  };
  ReplicaMetadata md = SampleMetadata();
  md.volume_id.assign(129, 'a');
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.data_path.assign(1025, 'a');
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.block_size = 3000;
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.block_size = 128 * 1024;
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.size += 512;
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.dirty_map.push_back(0);
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.dirty_since_generation = 1;  // without tracking
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.tracking_dirty = true;
  md.dirty_since_generation = md.generation + 1;  // after the generation
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.rebuild_cursor = md.size + md.block_size;
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.rebuild_generation = 3;  // without a cursor
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.dirty_region_size = 1024;  // < block_size
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();
  md.dirty_region_size = 0;
  md.dirty_map.clear();
  md.tracking_dirty = true;  // tracking into no map
  EXPECT_EQ(encode(md), StatusCode::kInvalidArgument);
  md = SampleMetadata();  // needs ~2.1 KiB (2 KiB map)
  EXPECT_EQ(EncodeMetadataSlot(md, 1, 2048, &image).code(), StatusCode::kInvalidArgument);
}

TEST(MetadataSlotTest, EverySingleBitFlipIsDetected) {
  ReplicaMetadata md = SampleMetadata();
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 99, slot_size, &image).ok());
  // Every bit of the slot: header, dirty map and padding.
  for (size_t bit = 0; bit < slot_size * 8; ++bit) {
    std::string flipped = image;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
    ReplicaMetadata out;
    uint64_t seq = 0;
    Status st = DecodeMetadataSlot(flipped.data(), flipped.size(), &out, &seq);
    ASSERT_EQ(st.code(), StatusCode::kDataLoss) << "bit " << bit << " not detected";
  }
}

TEST(MetadataSlotTest, TruncatedImagesAreRejected) {
  ReplicaMetadata md = SampleMetadata();
  size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  std::string image;
  ASSERT_TRUE(EncodeMetadataSlot(md, 1, slot_size, &image).ok());
  const size_t total = DecodeFixed32(reinterpret_cast<const uint8_t*>(image.data()) + 16);
  ASSERT_GT(total, 2048u);
  for (size_t n = 0; n < total; ++n) {  // every prefix shorter than the record
    ReplicaMetadata out;
    uint64_t seq = 0;
    ASSERT_EQ(DecodeMetadataSlot(image.data(), n, &out, &seq).code(), StatusCode::kDataLoss) << n;
  }
}

TEST(MetadataSlotTest, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(20261125);
  ReplicaMetadata md = SampleMetadata();
  std::string valid;
  ASSERT_TRUE(EncodeMetadataSlot(md, 5, 8192, &valid).ok());
  for (int iter = 0; iter < 20000; ++iter) {
    std::string buf;
    if (iter % 2 == 0) {
      // Pure noise of random length.
      buf.resize(rng() % 9000);
      for (char& c : buf) c = static_cast<char>(rng());
    } else {
      // A valid image with a few random bytes changed and a random length, so
      // the magic and lengths often survive and the parser is exercised.
      buf = valid.substr(0, rng() % (valid.size() + 1));
      for (int k = 0; k < 1 + static_cast<int>(rng() % 4) && !buf.empty(); ++k) {
        buf[rng() % buf.size()] = static_cast<char>(rng());
      }
    }
    ReplicaMetadata out;
    uint64_t seq = 0;
    // Copy to an exactly sized heap block so ASan catches any overread.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[buf.size() + 1]);
    std::memcpy(exact.get(), buf.data(), buf.size());
    Status st = DecodeMetadataSlot(exact.get(), buf.size(), &out, &seq);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), StatusCode::kDataLoss);
    }
  }
}

TEST_F(MetadataFileTest, CreateThenOpen) {
  ReplicaMetadata md = SampleMetadata();
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->current(), md);
  EXPECT_EQ((*f)->sequence(), 1u);
  struct stat sb;
  ASSERT_EQ(::stat(path_.c_str(), &sb), 0);
  EXPECT_EQ(static_cast<size_t>(sb.st_size), 2 * MetadataSlotSize(md.size, md.dirty_region_size));

  auto g = MetadataFile::Open(path_);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->current(), md);
  EXPECT_EQ((*g)->sequence(), 1u);
}

TEST_F(MetadataFileTest, CreateExistingFails) {
  ASSERT_TRUE(MetadataFile::Create(path_, SampleMetadata()).ok());
  EXPECT_EQ(MetadataFile::Create(path_, SampleMetadata()).status().code(),
            StatusCode::kAlreadyExists);
}

TEST_F(MetadataFileTest, OpenMissingIsNotFound) {
  EXPECT_EQ(MetadataFile::Open(path_).status().code(), StatusCode::kNotFound);
}

TEST_F(MetadataFileTest, UpdateThenReopen) {
  ReplicaMetadata md = SampleMetadata();
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok());
  for (uint64_t i = 1; i <= 5; ++i) {
    md.highest_epoch = 100 + i;
    md.dirty_map[i] = static_cast<uint8_t>(i);
    ASSERT_TRUE((*f)->Update(md).ok());
    EXPECT_EQ((*f)->sequence(), 1 + i);
    EXPECT_EQ((*f)->current(), md);
  }
  auto g = MetadataFile::Open(path_);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->current(), md);
  EXPECT_EQ((*g)->sequence(), 6u);
  // Updates continue from the reopened state.
  md.generation = 8;
  ASSERT_TRUE((*g)->Update(md).ok());
  auto h = MetadataFile::Open(path_);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)->current(), md);
  EXPECT_EQ((*h)->sequence(), 7u);
}

TEST_F(MetadataFileTest, InPlaceEditsPersistOnSync) {
  ReplicaMetadata md = SampleMetadata();
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok());
  ReplicaMetadata* m = (*f)->mutable_current();
  m->dirty_map[5] = 0x42;
  m->tracking_dirty = true;
  m->generation = 11;
  ASSERT_TRUE((*f)->Sync().ok());
  EXPECT_EQ((*f)->sequence(), 2u);
  ReplicaMetadata want = *m;
  f->reset();
  auto g = MetadataFile::Open(path_);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->current(), want);
  EXPECT_EQ((*g)->sequence(), 2u);
}

TEST_F(MetadataFileTest, UpdateMayNotChangeSlotGeometry) {
  ReplicaMetadata md = SampleMetadata();
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok());
  ReplicaMetadata bigger = md;
  bigger.size *= 2;
  bigger.dirty_map.resize(4096);
  EXPECT_EQ((*f)->Update(bigger).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->current(), md);
  EXPECT_EQ((*f)->sequence(), 1u);
}

TEST_F(MetadataFileTest, TornNewestSlotFallsBackToPrevious) {
  ReplicaMetadata md = SampleMetadata();
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok());
  ReplicaMetadata v2 = md;
  v2.highest_epoch = 43;
  ASSERT_TRUE((*f)->Update(v2).ok());  // seq 2, slot 1
  ReplicaMetadata v3 = v2;
  v3.highest_epoch = 44;
  ASSERT_TRUE((*f)->Update(v3).ok());  // seq 3, slot 0
  f->reset();

  // A torn write of slot 0: its tail (part of the dirty map) is garbage.
  Corrupt(1000, 1500);
  auto g = MetadataFile::Open(path_);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->current(), v2);
  EXPECT_EQ((*g)->sequence(), 2u);

  // The next update goes to the damaged slot, leaving v2 intact.
  ReplicaMetadata v4 = v2;
  v4.generation = 9;
  ASSERT_TRUE((*g)->Update(v4).ok());
  EXPECT_EQ((*g)->sequence(), 3u);
  g->reset();
  auto h = MetadataFile::Open(path_);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)->current(), v4);

  // Damage in the slot-1 header only: slot 0 (v4) still wins.
  Corrupt(slot_size + 10, 4);
  auto k = MetadataFile::Open(path_);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ((*k)->current(), v4);
}

TEST_F(MetadataFileTest, TornFirstUpdateFallsBackToCreatedRecord) {
  ReplicaMetadata md = SampleMetadata();
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok());
  ReplicaMetadata v2 = md;
  v2.clean_shutdown = false;
  ASSERT_TRUE((*f)->Update(v2).ok());
  f->reset();
  Corrupt(slot_size + 1000, 16);  // inside the dirty map of slot 1
  auto g = MetadataFile::Open(path_);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->current(), md);
  EXPECT_EQ((*g)->sequence(), 1u);
}

TEST_F(MetadataFileTest, BothSlotsCorruptIsDataLoss) {
  ReplicaMetadata md = SampleMetadata();
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  auto f = MetadataFile::Create(path_, md);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Update(md).ok());
  f->reset();
  Corrupt(100, 8);
  Corrupt(slot_size + 100, 8);
  EXPECT_EQ(MetadataFile::Open(path_).status().code(), StatusCode::kDataLoss);
}

TEST_F(MetadataFileTest, TruncatedFileIsDataLoss) {
  ReplicaMetadata md = SampleMetadata();
  const size_t slot_size = MetadataSlotSize(md.size, md.dirty_region_size);
  for (off_t len : {off_t{0}, off_t{5000}, static_cast<off_t>(slot_size),
                    static_cast<off_t>(2 * slot_size - 1)}) {
    std::filesystem::remove(path_);
    auto f = MetadataFile::Create(path_, md);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Update(md).ok());
    f->reset();
    ASSERT_EQ(::truncate(path_.c_str(), len), 0);
    EXPECT_EQ(MetadataFile::Open(path_).status().code(), StatusCode::kDataLoss) << len;
  }
}

}  // namespace
}  // namespace tandem::replica

#include "controller/volume_params.h"

#include <gtest/gtest.h>

namespace tandem::controller {
namespace {

ParamMap Params(std::initializer_list<std::pair<const std::string, std::string>> kv) {
  ParamMap m;
  for (const auto& [k, v] : kv) m[k] = v;
  return m;
}

TEST(VolumeParamsTest, DefaultsWhenEmpty) {
  auto p = ParseVolumeParams({});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->replicas, 3u);
  EXPECT_EQ(p->fs_type, "ext4");
  EXPECT_TRUE(p->thin);
  EXPECT_EQ(p->rebuild_rate_bytes_per_sec, 0u);
}

TEST(VolumeParamsTest, ParsesEveryParameter) {
  auto p = ParseVolumeParams(
      Params({{"replicas", "2"}, {"fsType", "xfs"}, {"thin", "false"}, {"rebuildRate", "64M"}}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->replicas, 2u);
  EXPECT_EQ(p->fs_type, "xfs");
  EXPECT_FALSE(p->thin);
  EXPECT_EQ(p->rebuild_rate_bytes_per_sec, 64u << 20);
}

TEST(VolumeParamsTest, ProvisionerKeysAreIgnored) {
  auto p = ParseVolumeParams(
      Params({{"csi.storage.k8s.io/pvc/name", "data-0"}, {"csi.storage.k8s.io/pv/name", "pvc-1"}}));
  EXPECT_TRUE(p.ok());
}

TEST(VolumeParamsTest, BadValuesAndUnknownKeysNameTheParameter) {
  struct Case {
    const char* key;
    const char* value;
  } cases[] = {{"replicas", "0"},     {"replicas", "6"},       {"replicas", "03"},
               {"replicas", "x"},     {"fsType", "btrfs"},     {"thin", "yes"},
               {"rebuildRate", "1K"}, {"rebuildRate", "fast"}, {"replica", "3"}};
  for (const auto& c : cases) {
    auto p = ParseVolumeParams(Params({{c.key, c.value}}));
    ASSERT_FALSE(p.ok()) << c.key << "=" << c.value;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(std::string("parameters.") + c.key), std::string::npos)
        << p.status().message();
  }
}

TEST(VolumeParamsTest, MutableParamsAcceptOnlyReplicasAndRebuildRate) {
  VolumeParams cur;
  auto p = ParseMutableParams(Params({{"replicas", "5"}}), cur);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->replicas, 5u);
  EXPECT_EQ(p->fs_type, "ext4");
  auto bad = ParseMutableParams(Params({{"fsType", "xfs"}}), cur);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(VolumeParamsTest, CreateParamsApplyTheMutableOnesOverTheStorageClass) {
  auto p = ParseCreateParams(Params({{"replicas", "1"}, {"fsType", "xfs"}, {"rebuildRate", "2M"}}),
                             Params({{"replicas", "2"}}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->replicas, 2u);
  EXPECT_EQ(p->fs_type, "xfs");
  EXPECT_EQ(p->rebuild_rate_bytes_per_sec, 2u << 20);
  EXPECT_FALSE(ParseCreateParams({}, Params({{"fsType", "xfs"}})).ok()) << "fsType is not mutable";
  EXPECT_FALSE(ParseCreateParams(Params({{"replicas", "9"}}), {}).ok());
}

TEST(VolumeParamsTest, SizeRoundsUpToTheBlockSize) {
  EXPECT_EQ(*VolumeSizeFor(1, 0), 4096u);
  EXPECT_EQ(*VolumeSizeFor(4096, 0), 4096u);
  EXPECT_EQ(*VolumeSizeFor(4097, 0), 8192u);
  EXPECT_EQ(*VolumeSizeFor(0, 0), kDefaultVolumeBytes);
  // Only a limit: the default, capped by the limit rounded down.
  EXPECT_EQ(*VolumeSizeFor(0, 10000), 8192u);
  EXPECT_EQ(*VolumeSizeFor(0, 4ll << 30), kDefaultVolumeBytes);
  EXPECT_EQ(*VolumeSizeFor(5000, 8192), 8192u);
}

TEST(VolumeParamsTest, ImpossibleRangesAreOutOfRangeAndNegativeInvalid) {
  EXPECT_EQ(VolumeSizeFor(4097, 5000).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(VolumeSizeFor(0, 100).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(VolumeSizeFor(static_cast<int64_t>(kMaxVolumeBytes) + 1, 0).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(VolumeSizeFor(-1, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VolumeSizeFor(0, -1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(VolumeSizeFor(10, 5).status().code(), StatusCode::kInvalidArgument);
}

TEST(VolumeParamsTest, SizeSatisfies) {
  EXPECT_TRUE(SizeSatisfies(8192, 5000, 0));
  EXPECT_TRUE(SizeSatisfies(8192, 0, 8192));
  EXPECT_FALSE(SizeSatisfies(4096, 5000, 0));
  EXPECT_FALSE(SizeSatisfies(8192, 0, 8000));
}

}  // namespace
}  // namespace tandem::controller

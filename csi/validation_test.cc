#include "csi/validation.h"

#include <gtest/gtest.h>

namespace tandem::csi {
namespace {

using Mode = v1::VolumeCapability::AccessMode;

v1::VolumeCapability Mount(const std::string& fs, Mode::Mode mode) {
  v1::VolumeCapability cap;
  cap.mutable_mount()->set_fs_type(fs);
  cap.mutable_access_mode()->set_mode(mode);
  return cap;
}

TEST(ValidationTest, MissingFieldIsInvalidArgumentNamingIt) {
  Status st = RequireField("volume_id", "");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "volume_id missing in request");
  EXPECT_TRUE(RequireField("volume_id", "v").ok());
}

TEST(ValidationTest, CapabilityWithoutAccessTypeOrModeIsMalformed) {
  v1::VolumeCapability cap;
  cap.mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
  Status st = CheckCapabilityShape("volume_capability", cap);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("volume_capability.access_type"), std::string::npos);

  v1::VolumeCapability no_mode;
  no_mode.mutable_block();
  st = CheckCapabilityShape("volume_capability", no_mode);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("access_mode"), std::string::npos);
}

TEST(ValidationTest, EmptyCapabilityListIsMissing) {
  google::protobuf::RepeatedPtrField<v1::VolumeCapability> caps;
  Status st = CheckCapabilitiesShape("volume_capabilities", caps);
  EXPECT_EQ(st.message(), "volume_capabilities missing in request");
  *caps.Add() = Mount("ext4", Mode::SINGLE_NODE_WRITER);
  caps.Add()->mutable_block();  // no mode
  st = CheckCapabilitiesShape("volume_capabilities", caps);
  EXPECT_NE(st.message().find("volume_capabilities[1]"), std::string::npos);
}

TEST(ValidationTest, SingleNodeModesAndExt4XfsAreSupported) {
  for (auto mode : {Mode::SINGLE_NODE_WRITER, Mode::SINGLE_NODE_READER_ONLY,
                    Mode::SINGLE_NODE_SINGLE_WRITER, Mode::SINGLE_NODE_MULTI_WRITER}) {
    for (const char* fs : {"", "ext4", "xfs"}) {
      EXPECT_EQ(UnsupportedCapabilityReason("c", Mount(fs, mode)), "") << mode << fs;
    }
  }
  v1::VolumeCapability block;
  block.mutable_block();
  block.mutable_access_mode()->set_mode(Mode::SINGLE_NODE_WRITER);
  EXPECT_EQ(UnsupportedCapabilityReason("c", block), "");
}

TEST(ValidationTest, MultiNodeModesAndOtherFilesystemsAreNot) {
  for (auto mode : {Mode::MULTI_NODE_READER_ONLY, Mode::MULTI_NODE_SINGLE_WRITER,
                    Mode::MULTI_NODE_MULTI_WRITER}) {
    EXPECT_NE(UnsupportedCapabilityReason("c", Mount("ext4", mode)), "");
  }
  std::string why = UnsupportedCapabilityReason("cap", Mount("btrfs", Mode::SINGLE_NODE_WRITER));
  EXPECT_NE(why.find("cap.mount.fs_type"), std::string::npos);
}

}  // namespace
}  // namespace tandem::csi

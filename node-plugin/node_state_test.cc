#include "node-plugin/node_state.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "node-plugin/test_dir.h"

namespace tandem::node {
namespace {

TEST(NodeStateTest, PutGetListRemoveSurviveAReopen) {
  TestDir dir;
  {
    auto state = NodeState::Open(dir / "state");
    ASSERT_TRUE(state.ok());
    StagedVolume v{.volume_id = "pvc-1",
                   .staging_path = "/var/lib/kubelet/x/globalmount",
                   .export_path = "/run/tandem/fuse/pvc-1",
                   .device = "/dev/loop7",
                   .fs_type = "xfs",
                   .block = false,
                   .read_only = true,
                   .epoch = 9};
    ASSERT_TRUE(state->Put(v).ok());
    ASSERT_TRUE(state->Put(StagedVolume{.volume_id = "pvc-2", .block = true, .epoch = 1}).ok());
  }
  auto state = NodeState::Open(dir / "state");
  ASSERT_TRUE(state.ok());
  auto v = state->Get("pvc-1");
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->has_value());
  EXPECT_EQ((*v)->staging_path, "/var/lib/kubelet/x/globalmount");
  EXPECT_EQ((*v)->device, "/dev/loop7");
  EXPECT_EQ((*v)->fs_type, "xfs");
  EXPECT_TRUE((*v)->read_only);
  EXPECT_EQ((*v)->epoch, 9u);
  auto all = state->List();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
  ASSERT_TRUE(state->Remove("pvc-1").ok());
  ASSERT_TRUE(state->Remove("pvc-1").ok());
  v = state->Get("pvc-1");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());
  struct stat st;
  ASSERT_EQ(stat((dir / "state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(NodeStateTest, HostileIdsAndValuesAreRefused) {
  TestDir dir;
  auto state = NodeState::Open(dir / "state");
  ASSERT_TRUE(state.ok());
  for (const char* id : {"", ".", "..", "../x", "a/b", "a b"}) {
    EXPECT_EQ(state->Put(StagedVolume{.volume_id = id}).code(), StatusCode::kInvalidArgument) << id;
    EXPECT_EQ(state->Get(id).status().code(), StatusCode::kInvalidArgument) << id;
  }
  EXPECT_EQ(
      state->Put(StagedVolume{.volume_id = "ok", .staging_path = "/a\ndevice=/dev/sda"}).code(),
      StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::node

// Registration.GetAttachment (controller/proto/registration.proto): the
// publish_context of a volume's attachment as the record says now, against
// a real tandem-controller and three real engines.

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "controller/testing_cluster_fixture.h"
#include "csi/publish_context.h"

namespace tandem::controller::cluster_testing {
namespace {

class AttachmentTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    reg_ = cluster_.Registration();
  }
  csi::ControllerPublishVolumeResponse Publish(const std::string& id, const std::string& node) {
    csi::ControllerPublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_node_id(node);
    *req.mutable_volume_capability() = BlockCap();
    csi::ControllerPublishVolumeResponse resp;
    grpc::Status st = ctl_->ControllerPublishVolume(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  grpc::Status Get(const std::string& id, const std::string& node, v1::GetAttachmentResponse* r) {
    v1::GetAttachmentRequest req;
    req.set_volume_id(id);
    req.set_node_id(node);
    return reg_->GetAttachment(Ctx().get(), req, r);
  }

  std::unique_ptr<v1::Registration::Stub> reg_;
};

TEST_F(AttachmentTest, AnswersThePublishContextWithoutTheSecretAndTheRightCodes) {
  const std::string id = CreateVolume("att-codes", 3);
  v1::GetAttachmentResponse resp;
  EXPECT_EQ(Get(id, "", &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get("", "e0", &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get("no-such-volume", "e0", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status st = Get(id, "e0", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "not published";

  auto published = Publish(id, "e0");
  st = Get(id, "e1", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "published elsewhere";
  EXPECT_NE(st.error_message().find("e0"), std::string::npos) << st.error_message();

  st = Get(id, "e0", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto want = ::tandem::csi::DecodePublishContext(published.publish_context());
  auto got = ::tandem::csi::DecodePublishContext(resp.publish_context());
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_FALSE(want->volume_secret.empty());
  EXPECT_EQ(resp.publish_context().count(::tandem::csi::kCtxVolumeSecret), 0u);
  want->volume_secret.clear();
  EXPECT_EQ(*got, *want) << "the same context as the publish, but the secret";

  // What each NodeStage now adds (twice): recorded, not asserted.
  std::vector<double> ms;
  for (int i = 0; i < 100; ++i) {
    auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(Get(id, "e0", &resp).ok());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  RecordProperty("get_attachment_p50_ms", std::to_string(ms[49]));
  RecordProperty("get_attachment_p99_ms", std::to_string(ms[98]));

  // Unpublished: no attachment any more.
  csi::ControllerUnpublishVolumeRequest ureq;
  ureq.set_volume_id(id);
  ureq.set_node_id("e0");
  csi::ControllerUnpublishVolumeResponse uresp;
  ASSERT_TRUE(ctl_->ControllerUnpublishVolume(Ctx().get(), ureq, &uresp).ok());
  EXPECT_EQ(Get(id, "e0", &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // Deleted: NOT_FOUND.
  csi::DeleteVolumeRequest dreq;
  dreq.set_volume_id(id);
  csi::DeleteVolumeResponse dresp;
  ASSERT_TRUE(ctl_->DeleteVolume(Ctx().get(), dreq, &dresp).ok());
  EXPECT_EQ(Get(id, "e0", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Published but not staged yet (no live target to change): a grow changes
// only the record, and the attachment's context follows it at the same epoch.
TEST_F(AttachmentTest, FollowsAGrowOfAPublishedVolumeAtThePublishEpoch) {
  const std::string id = CreateVolume("att-grow", 1);
  auto published = ::tandem::csi::DecodePublishContext(Publish(id, "e0").publish_context());
  ASSERT_TRUE(published.ok());
  ASSERT_EQ(published->replicas.size(), 1u);
  grpc::Status st = SetReplicas(ctl_.get(), id, 2);
  ASSERT_TRUE(st.ok()) << st.error_message();
  v1::GetAttachmentResponse resp;
  st = Get(id, "e0", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto now = ::tandem::csi::DecodePublishContext(resp.publish_context());
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->epoch, published->epoch);
  ASSERT_EQ(now->replicas.size(), 2u);
  EXPECT_EQ(now->replicas[0], published->replicas[0]);
}

// GetAttachment reads the record under the volume's in-flight guard and
// builds its answer after letting it go: a replica's node not heard from
// since the controller started makes it poll every engine (1.5 s for each
// that does not answer), and a ModifyVolume of the same volume meanwhile is
// not ABORTED.
TEST_F(AttachmentTest, PollingTheEnginesDoesNotHoldTheVolumesGuard) {
  const std::string id = CreateVolume("att-poll", 3);
  Publish(id, "e0");
  // A restarted controller has not heard from e1 and e2 (stopped).
  cluster_.engines()[1].process->Signal(SIGSTOP);
  cluster_.engines()[2].process->Signal(SIGSTOP);
  ASSERT_TRUE(cluster_.StartController().ok());
  ctl_ = cluster_.Controller();
  reg_ = cluster_.Registration();
  std::atomic<bool> answered{false};
  std::thread get([&] {
    v1::GetAttachmentResponse resp;
    (void)Get(id, "e0", &resp);
    answered = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // polling e1, e2 by now
  csi::ControllerModifyVolumeRequest mod;
  mod.set_volume_id(id);
  (*mod.mutable_mutable_parameters())["rebuildRate"] = "8M";
  csi::ControllerModifyVolumeResponse mresp;
  grpc::Status st = ctl_->ControllerModifyVolume(Ctx().get(), mod, &mresp);
  bool overlapped = !answered;
  cluster_.engines()[1].process->Signal(SIGCONT);
  cluster_.engines()[2].process->Signal(SIGCONT);
  get.join();
  EXPECT_TRUE(overlapped) << "GetAttachment answered before the ModifyVolume did";
  EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
}

}  // namespace
}  // namespace tandem::controller::cluster_testing

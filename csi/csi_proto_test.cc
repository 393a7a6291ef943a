// Properties of our csi.proto that the rest of the code relies on.

#include <gtest/gtest.h>

#include <google/protobuf/descriptor.h>

#include "common/grpc/redact.h"
#include "csi/csi.pb.h"

namespace tandem::csi {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FileDescriptor;

void CollectSecretFields(const Descriptor* d, std::vector<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->options().GetExtension(::csi::v1::csi_secret)) out->push_back(f->full_name());
  }
  for (int i = 0; i < d->nested_type_count(); ++i) CollectSecretFields(d->nested_type(i), out);
}

// The call log (common/grpc/call_log.h) redacts by field name; every field
// the spec marks csi_secret must be caught by that rule, or a CSI secret
// would reach the logs.
TEST(CsiProtoTest, EveryCsiSecretFieldIsRedactedByTheCallLog) {
  const FileDescriptor* file = ::csi::v1::CreateVolumeRequest::descriptor()->file();
  std::vector<std::string> secret;
  for (int i = 0; i < file->message_type_count(); ++i) {
    CollectSecretFields(file->message_type(i), &secret);
  }
  EXPECT_EQ(secret.size(), 19u);  // the spec's count at v1.13
  for (const auto& full : secret) {
    std::string name = full.substr(full.rfind('.') + 1);
    EXPECT_TRUE(rpc::IsSecretFieldName(name)) << full;
  }
}

TEST(CsiProtoTest, RedactedRequestCarriesNoSecretValue) {
  ::csi::v1::NodeStageVolumeRequest req;
  req.set_volume_id("v1");
  (*req.mutable_secrets())["password"] = "hunter2-do-not-log";
  std::string text = rpc::RedactedText(req);
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_NE(text.find("v1"), std::string::npos);
}

TEST(CsiProtoTest, WireNumbersMatchTheSpec) {
  // Spot checks of numbers the sidecars depend on (the whole descriptor set
  // was compared with the spec's when the file was written: docs/controller.md).
  const auto* d = ::csi::v1::CreateVolumeRequest::descriptor();
  EXPECT_EQ(d->FindFieldByName("accessibility_requirements")->number(), 7);
  EXPECT_EQ(d->FindFieldByName("mutable_parameters")->number(), 8);
  EXPECT_EQ(::csi::v1::NodeExpandVolumeRequest::descriptor()->FindFieldByName("secrets")->number(),
            6);
  EXPECT_EQ(::csi::v1::ControllerServiceCapability::RPC::MODIFY_VOLUME, 14);
  EXPECT_EQ(::csi::v1::ControllerServiceCapability::RPC::GET_SNAPSHOT, 15);
  EXPECT_EQ(::csi::v1::VolumeCapability::AccessMode::SINGLE_NODE_MULTI_WRITER, 7);
  EXPECT_EQ(d->file()->package(), "csi.v1");
}

}  // namespace
}  // namespace tandem::csi

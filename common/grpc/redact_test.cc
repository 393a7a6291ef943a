#include "common/grpc/redact.h"

#include <gtest/gtest.h>

#include <string>

#include "common/grpc/testdata/echo.pb.h"

namespace tandem::rpc {
namespace {

namespace pb = ::tandem::rpc::test;

// Every secret value starts with this; none may appear in the text.
constexpr char kSecret[] = "S3CRET";

pb::EchoRequest RequestFullOfSecrets() {
  pb::EchoRequest req;
  req.set_name("visible-name");
  (*req.mutable_secrets())["username"] = std::string(kSecret) + "-user";
  (*req.mutable_secrets())["password"] = std::string(kSecret) + "-pass";
  req.set_auth_token(std::string(kSecret) + "-token");
  req.mutable_inner()->set_password(std::string(kSecret) + "-inner");
  req.mutable_inner()->set_note("visible-note");
  req.add_items()->set_password(std::string(kSecret) + "-item");
  req.set_client_secret_id(424242);
  (*req.mutable_by_name())["k"].set_password(std::string(kSecret) + "-map-value");
  req.add_api_tokens(std::string(kSecret) + "-repeated");
  return req;
}

TEST(RedactTest, NoSecretFieldAtAnyDepthReachesTheText) {
  pb::EchoRequest req = RequestFullOfSecrets();
  const std::string text = RedactedText(req);
  EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
  EXPECT_EQ(text.find("424242"), std::string::npos) << text;
  EXPECT_NE(text.find("visible-name"), std::string::npos) << text;
  EXPECT_NE(text.find("visible-note"), std::string::npos) << text;
  EXPECT_NE(text.find("[redacted]"), std::string::npos) << text;
  // Dropped non-string secrets are named, so a reader knows they were there.
  EXPECT_NE(text.find("tandem.rpc.test.EchoRequest.secrets"), std::string::npos) << text;
  EXPECT_NE(text.find("client_secret_id"), std::string::npos) << text;
  // The caller's message is untouched.
  EXPECT_EQ(req.auth_token(), std::string(kSecret) + "-token");
  EXPECT_EQ(req.secrets().size(), 2u);
}

TEST(RedactTest, AMapEntryWhoseKeyNamesASecretLosesItsValue) {
  pb::EchoRequest req;
  (*req.mutable_context())["tandem.csi.io/secret"] = std::string(kSecret) + "-volume";
  (*req.mutable_context())["tandem.csi.io/epoch"] = "7";
  const std::string text = RedactedText(req);
  EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
  EXPECT_NE(text.find("tandem.csi.io/secret"), std::string::npos) << text;
  EXPECT_NE(text.find("\"7\""), std::string::npos) << text;
}

TEST(RedactTest, UnknownFieldsAreDropped) {
  // A newer client's field this binary does not know: its bytes would be
  // printed by number.
  pb::EchoRequest req;
  req.set_name("n");
  req.GetReflection()->MutableUnknownFields(&req)->AddLengthDelimited(99, std::string(kSecret));
  const std::string text = RedactedText(req);
  EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
  EXPECT_EQ(text.find("99"), std::string::npos) << text;
}

TEST(RedactTest, LongTextIsCut) {
  pb::EchoRequest req;
  req.set_name(std::string(5000, 'x'));
  const std::string text = RedactedText(req, 100);
  EXPECT_EQ(text.size(), 103u);
  EXPECT_EQ(text.substr(100), "...");
}

TEST(RedactTest, SecretNamesMatchCaseInsensitively) {
  for (const char* name : {"secrets", "auth_token", "password", "clientSecret", "Credentials",
                           "api_tokens", "PASSWD"}) {
    EXPECT_TRUE(IsSecretFieldName(name)) << name;
  }
  for (const char* name : {"name", "volume_id", "key", "value", "epoch"}) {
    EXPECT_FALSE(IsSecretFieldName(name)) << name;
  }
}

}  // namespace
}  // namespace tandem::rpc

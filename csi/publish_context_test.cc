#include "csi/publish_context.h"

#include "common/grpc/redact.h"
#include "csi/csi.pb.h"

#include <gtest/gtest.h>

namespace tandem::csi {
namespace {

PublishContext Sample() {
  PublishContext ctx;
  ctx.epoch = 7;
  ctx.replicas = {{"tv-1-r0", "127.0.0.1:9500"}, {"tv-1-r1", "10.0.0.2:9500"}};
  ctx.in_sync_generation_id = 0xfeedbeefcafe;
  ctx.in_sync_replica_ids = {"tv-1-r0"};
  ctx.size_bytes = 1 << 30;
  ctx.rebuild_rate_bytes_per_sec = 50 << 20;
  ctx.volume_secret = "00ff";
  return ctx;
}

TEST(PublishContextTest, RoundTrips) {
  auto map = EncodePublishContext(Sample());
  // The exact text tandem-node parses (node-plugin/publish_context.h).
  EXPECT_EQ(map.at("tandem.csi.io/replicas"), "127.0.0.1:9500,10.0.0.2:9500");
  EXPECT_EQ(map.at("tandem.csi.io/replica-ids"), "tv-1-r0,tv-1-r1");
  EXPECT_EQ(map.at("tandem.csi.io/epoch"), "7");
  EXPECT_EQ(map.at("tandem.csi.io/in-sync-generation-id"), "0000feedbeefcafe");
  EXPECT_EQ(map.at("tandem.csi.io/in-sync-replica-ids"), "tv-1-r0");
  EXPECT_EQ(map.at("tandem.csi.io/size-bytes"), "1073741824");
  EXPECT_EQ(map.at("tandem.csi.io/rebuild-rate"), "52428800");
  EXPECT_EQ(map.at("tandem.csi.io/secret"), "00ff");
  auto decoded = DecodePublishContext(map);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, Sample());
}

TEST(PublishContextTest, EmptyInSyncSetRoundTrips) {
  PublishContext ctx = Sample();
  ctx.in_sync_replica_ids.clear();
  ctx.in_sync_generation_id = 0;
  auto decoded = DecodePublishContext(EncodePublishContext(ctx));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, ctx);
}

TEST(PublishContextTest, MissingOrMalformedKeysNameTheKey) {
  auto map = EncodePublishContext(Sample());
  map.erase(kCtxEpoch);
  auto r = DecodePublishContext(map);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("publish_context[tandem.csi.io/epoch]"), std::string::npos);
  EXPECT_EQ(r.status().message().find("00ff"), std::string::npos);  // never echoes the secret

  map = EncodePublishContext(Sample());
  map[kCtxSize] = "12x";
  EXPECT_EQ(DecodePublishContext(map).status().code(), StatusCode::kInvalidArgument);
  map = EncodePublishContext(Sample());
  map[kCtxReplicas] = "no-port";
  EXPECT_EQ(DecodePublishContext(map).status().code(), StatusCode::kInvalidArgument);
  map[kCtxReplicas] = "";
  EXPECT_EQ(DecodePublishContext(map).status().code(), StatusCode::kInvalidArgument);
  map = EncodePublishContext(Sample());
  map[kCtxReplicaIds] = "only-one";
  EXPECT_EQ(DecodePublishContext(map).status().code(), StatusCode::kInvalidArgument);
  map = EncodePublishContext(Sample());
  map[kCtxEpoch] = "0";
  EXPECT_EQ(DecodePublishContext(map).status().code(), StatusCode::kInvalidArgument);
}

// The call log (common/grpc/redact.h) prints a NodeStageVolume request
// without the secret in its publish_context, and with everything else.
TEST(PublishContextTest, TheCallLogHidesOnlyTheSecret) {
  auto map = EncodePublishContext(Sample());
  ::csi::v1::NodeStageVolumeRequest req;
  for (const auto& [k, v] : map) (*req.mutable_publish_context())[k] = v;
  const std::string text = rpc::RedactedText(req, 4096);
  EXPECT_EQ(text.find(map.at(kCtxVolumeSecret)), std::string::npos) << text;
  EXPECT_NE(text.find("[redacted]"), std::string::npos) << text;
  EXPECT_NE(text.find(map.at(kCtxReplicas)), std::string::npos) << text;
}

}  // namespace
}  // namespace tandem::csi

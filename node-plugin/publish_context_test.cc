#include "node-plugin/publish_context.h"

#include <gtest/gtest.h>

namespace tandem::node {
namespace {

TEST(PublishContextTest, RoundTripsEveryField) {
  PublishInfo in;
  in.epoch = 42;
  in.replicas = {{"10.0.0.1", 9701}, {"10.0.0.2", 9702}, {"10.0.0.3", 9703}};
  in.in_sync_generation_id = 0xdeadbeefcafe0001ULL;
  in.in_sync_replica_ids = {"r1", "r3"};
  in.size_bytes = 1 << 30;
  in.secret = "s3cr3t";
  in.rebuild_rate_bytes_per_sec = 50 << 20;
  auto out = ParsePublishContext(EncodePublishContext(in));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->epoch, 42u);
  ASSERT_EQ(out->replicas.size(), 3u);
  EXPECT_EQ(out->replicas[2].host, "10.0.0.3");
  EXPECT_EQ(out->replicas[2].port, 9703u);
  EXPECT_EQ(out->in_sync_generation_id, 0xdeadbeefcafe0001ULL);
  EXPECT_EQ(out->in_sync_replica_ids, (std::vector<std::string>{"r1", "r3"}));
  EXPECT_EQ(out->size_bytes, 1u << 30);
  EXPECT_EQ(out->secret, "s3cr3t");
  EXPECT_EQ(out->rebuild_rate_bytes_per_sec, 50u << 20);
}

TEST(PublishContextTest, ErrorsNameTheKeyAndNeverTheSecret) {
  std::map<std::string, std::string> m = {{"tandem.csi.io/replicas", "127.0.0.1:1"},
                                          {"tandem.csi.io/secret", "hunter2"}};
  auto r = ParsePublishContext(m);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tandem.csi.io/epoch"), std::string::npos);
  for (const auto& [key, value] :
       std::map<std::string, std::string>{{"epoch", "0"},
                                          {"epoch", "12x"},
                                          {"replicas", ""},
                                          {"replicas", "host-name:1"},
                                          {"replicas", "127.0.0.1:70000"},
                                          {"replicas", "127.0.0.1"},
                                          {"in-sync-generation-id", "xyz"}}) {
    auto bad = m;
    bad["tandem.csi.io/epoch"] = "1";
    bad["tandem.csi.io/" + key] = value;
    auto res = ParsePublishContext(bad);
    EXPECT_EQ(res.status().code(), StatusCode::kInvalidArgument) << key << "=" << value;
    EXPECT_EQ(res.status().message().find("hunter2"), std::string::npos);
  }
  m["tandem.csi.io/epoch"] = "1";
  m["tandem.csi.io/replicas"] =
      "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,127.0.0.1:6";
  EXPECT_EQ(ParsePublishContext(m).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::node

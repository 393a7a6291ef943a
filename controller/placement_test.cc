#include "controller/placement.h"

#include <gtest/gtest.h>

namespace tandem::controller {
namespace {

NodeCandidate Node(const std::string& id, const std::string& zone, uint64_t provisioned = 0) {
  NodeCandidate n;
  n.node_id = id;
  if (!zone.empty()) n.topology[kZoneKey] = zone;
  n.up = true;
  n.provisioned_bytes = provisioned;
  return n;
}

PlacementRequest Req(uint32_t replicas, uint64_t size = 1 << 30) {
  PlacementRequest r;
  r.replicas = replicas;
  r.size_bytes = size;
  return r;
}

using Ids = std::vector<std::string>;

TEST(PlacementTest, DistinctNodesDeterministicOrder) {
  std::vector<NodeCandidate> nodes = {Node("c", ""), Node("a", ""), Node("b", "")};
  auto r = Place(Req(3), nodes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (Ids{"a", "b", "c"}));
  EXPECT_EQ(*Place(Req(3), nodes), *r);  // same input, same answer
}

TEST(PlacementTest, FewerEligibleNodesThanReplicasIsResourceExhausted) {
  std::vector<NodeCandidate> nodes = {Node("a", ""), Node("b", ""), Node("c", "")};
  nodes[2].up = false;
  auto r = Place(Req(3), nodes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("1 down"), std::string::npos) << r.status().message();
}

TEST(PlacementTest, SpreadsOverZonesBeforeFillingOne) {
  std::vector<NodeCandidate> nodes = {Node("a1", "z1"), Node("a2", "z1"), Node("a3", "z1"),
                                      Node("b1", "z2"), Node("c1", "z3")};
  auto r = Place(Req(3), nodes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (Ids{"a1", "b1", "c1"}));
}

TEST(PlacementTest, PrefersLessProvisionedNodes) {
  std::vector<NodeCandidate> nodes = {Node("a", "", 10ull << 30), Node("b", ""),
                                      Node("c", "", 5ull << 30)};
  auto r = Place(Req(2), nodes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (Ids{"b", "c"}));
}

TEST(PlacementTest, RequisiteTopologyRestrictsNodes) {
  std::vector<NodeCandidate> nodes = {Node("a", "z1"), Node("b", "z2"), Node("c", "z3")};
  auto req = Req(2);
  req.requisite = {{{kZoneKey, "z2"}}, {{kZoneKey, "z3"}}};
  auto r = Place(req, nodes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (Ids{"b", "c"}));
  req.replicas = 3;
  EXPECT_EQ(Place(req, nodes).status().code(), StatusCode::kResourceExhausted);
}

TEST(PlacementTest, FirstPreferredTopologyGetsTheFirstReplica) {
  std::vector<NodeCandidate> nodes = {Node("a", "z1"), Node("b", "z2"), Node("c", "z3")};
  auto req = Req(2);
  req.preferred = {{{kZoneKey, "z3"}}, {{kZoneKey, "z1"}}};
  auto r = Place(req, nodes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0], "c");
  EXPECT_EQ(r->size(), 2u);
}

TEST(PlacementTest, CapacityLimitsThinAndThick) {
  std::vector<NodeCandidate> nodes = {Node("a", ""), Node("b", "")};
  for (auto& n : nodes) {
    n.total_bytes = 10ull << 30;
    n.free_bytes = 2ull << 30;
  }
  // Thick needs free space.
  auto thick = Req(2, 3ull << 30);
  thick.thin = false;
  EXPECT_EQ(Place(thick, nodes).status().code(), StatusCode::kResourceExhausted);
  // Thin may over-commit up to total * overcommit.
  auto thin = Req(2, 3ull << 30);
  thin.overcommit = 2.0;
  EXPECT_TRUE(Place(thin, nodes).ok());
  nodes[0].provisioned_bytes = 18ull << 30;
  EXPECT_EQ(Place(thin, nodes).status().code(), StatusCode::kResourceExhausted);
}

TEST(PlacementTest, ExcludedNodesAreSkipped) {
  std::vector<NodeCandidate> nodes = {Node("a", ""), Node("b", ""), Node("c", "")};
  auto req = Req(1);
  req.exclude_nodes = {"a", "b"};
  EXPECT_EQ(*Place(req, nodes), (Ids{"c"}));
}

TEST(PlacementTest, TopologyMatchNeedsEverySegment) {
  Segments node = {{"zone", "z1"}, {"rack", "r1"}};
  EXPECT_TRUE(TopologyMatches({{"zone", "z1"}}, node));
  EXPECT_TRUE(TopologyMatches({}, node));
  EXPECT_FALSE(TopologyMatches({{"zone", "z1"}, {"rack", "r2"}}, node));
  EXPECT_FALSE(TopologyMatches({{"row", "1"}}, node));
}

}  // namespace
}  // namespace tandem::controller

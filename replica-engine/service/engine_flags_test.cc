#include "replica-engine/service/engine_flags.h"

#include <gtest/gtest.h>

namespace tandem::service {
namespace {

TEST(EngineFlagsTest, CpuIsMinusOneOrAConfiguredCpu) {
  int cpu = 7;
  ASSERT_TRUE(ParseCpu("-1", 2, &cpu).ok());
  EXPECT_EQ(cpu, -1);
  ASSERT_TRUE(ParseCpu("0", 2, &cpu).ok());
  EXPECT_EQ(cpu, 0);
  ASSERT_TRUE(ParseCpu("1", 2, &cpu).ok());
  EXPECT_EQ(cpu, 1);
  ASSERT_TRUE(ParseCpu("63", 64, &cpu).ok());
  EXPECT_EQ(cpu, 63);
}

// atoi made each of these CPU 0 (or a CPU the machine lacks, whose pin then
// failed at run time).
TEST(EngineFlagsTest, CpuGarbageIsInvalidArgumentNamingTheFlag) {
  for (const char* bad :
       {"", "abc", "1x", " 1", "1 ", "+1", "-2", "-0", "0x1", "2", "99", "9999999999", "1.5"}) {
    int cpu = 7;
    Status st = ParseCpu(bad, 2, &cpu);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_EQ(st.message().rfind("--cpu", 0), 0u) << st.ToString();
    EXPECT_EQ(cpu, 7) << "'" << bad << "' changed the output";
  }
}

}  // namespace
}  // namespace tandem::service

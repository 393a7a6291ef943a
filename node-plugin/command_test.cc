#include "node-plugin/command.h"

#include <gtest/gtest.h>

namespace tandem::node {
namespace {

TEST(RunCommandTest, ReturnsExitCodeAndOutput) {
  auto out = RunCommand({"sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->exit_code, 3);
  EXPECT_NE(out->output.find("to-stdout"), std::string::npos);
  EXPECT_NE(out->output.find("to-stderr"), std::string::npos);
}

TEST(RunCommandTest, ArgumentsAreNotInterpretedByAShell) {
  auto out = RunCommand({"echo", "a; touch /nonexistent-dir/x $(id)"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->output, "a; touch /nonexistent-dir/x $(id)\n");
}

TEST(RunCommandTest, MissingToolIsNotFound) {
  auto out = RunCommand({"tandem-no-such-tool-xyz"});
  EXPECT_EQ(out.status().code(), StatusCode::kNotFound);
}

TEST(RunCommandTest, EmptyArgvIsInvalid) {
  EXPECT_EQ(RunCommand({}).status().code(), StatusCode::kInvalidArgument);
}

TEST(RunCommandTest, ARunawayToolIsKilledAtTheDeadline) {
  auto out = RunCommand({"sleep", "30"}, std::chrono::milliseconds(200));
  EXPECT_EQ(out.status().code(), StatusCode::kDeadlineExceeded);
}

TEST(RunCheckedTest, NonZeroExitIsAnErrorNamingTheToolAndItsOutput) {
  Status st = RunChecked({"sh", "-c", "echo broken >&2; exit 1"});
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_NE(st.message().find("exit 1"), std::string::npos);
  EXPECT_NE(st.message().find("broken"), std::string::npos);
  EXPECT_TRUE(RunChecked({"true"}).ok());
}

}  // namespace
}  // namespace tandem::node

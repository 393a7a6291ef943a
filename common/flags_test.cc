#include "common/flags.h"

#include "gtest/gtest.h"

namespace tandem {
namespace {

Status ParseArgs(Flags& f, std::vector<std::string> args) {
  std::vector<char*> argv;
  static std::string prog = "prog";
  argv.push_back(prog.data());
  for (auto& a : args) argv.push_back(a.data());
  return f.Parse(static_cast<int>(argv.size()), argv.data());
}

TEST(FlagsTest, ParsesEqualsAndSeparateValuesAndRepeats) {
  Flags f;
  f.Define("dir", "/d", "");
  f.Define("size", "1M", "");
  f.Define("verbose", "false", "");
  f.Define("replica", "", "");
  ASSERT_TRUE(ParseArgs(f, {"--dir=/x", "--size", "2G", "--verbose", "--replica=a", "--replica=b"})
                  .ok());
  EXPECT_EQ(f.Get("dir"), "/x");
  uint64_t v = 0;
  ASSERT_TRUE(f.GetUint("size", &v, true).ok());
  EXPECT_EQ(v, 2ull << 30);
  EXPECT_TRUE(f.GetBool("verbose"));
  EXPECT_EQ(f.GetAll("replica"), (std::vector<std::string>{"a", "b"}));
}

TEST(FlagsTest, UnknownFlagAndMissingValueAreErrors) {
  Flags f;
  f.Define("dir", "/d", "");
  Status st = ParseArgs(f, {"--dri=/x"});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--dri"), std::string::npos);
  Flags g;
  g.Define("dir", "/d", "");
  EXPECT_EQ(ParseArgs(g, {"--dir"}).code(), StatusCode::kInvalidArgument);
}

TEST(FlagsTest, BadNumbersNameTheFlag) {
  Flags f;
  f.Define("port", "x12", "");
  uint64_t v;
  Status st = f.GetUint("port", &v);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--port"), std::string::npos);
  EXPECT_FALSE(ParseSize("12Q", &v).ok());
  EXPECT_FALSE(ParseSize("-1", &v).ok());
  EXPECT_FALSE(ParseSize("99999999999999T", &v).ok());
  ASSERT_TRUE(ParseSize("4K", &v).ok());
  EXPECT_EQ(v, 4096u);
}

}  // namespace
}  // namespace tandem

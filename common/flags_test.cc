#include "common/flags.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>

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
  ASSERT_TRUE(
      ParseArgs(f, {"--dir=/x", "--size", "2G", "--verbose", "--replica=a", "--replica=b"}).ok());
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

// Regression (flags fuzzer): strtoull skips leading white space and takes a
// sign, so " -1" used to parse as 2^64 - 1 and " 5" / "+5" as 5.
TEST(FlagsTest, ParseSizeRefusesWhiteSpaceAndSigns) {
  for (const char* text : {" -1", "-1", " 5", "\t5", "\n5", "+5", " +5", "-0", " 4K", "5 "}) {
    uint64_t v = 77;
    Status st = ParseSize(text, &v);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << text << "'";
    EXPECT_EQ(v, 77u) << "'" << text << "' wrote the output";
  }
  uint64_t v = 0;
  Flags f;
  f.Define("buffer-pool", " -1", "");
  EXPECT_EQ(f.GetUint("buffer-pool", &v, /*sizes=*/true).code(), StatusCode::kInvalidArgument);
}

TEST(FlagsTest, ParsePortTakesPlainDecimalInRange) {
  uint16_t p = 0;
  ASSERT_TRUE(ParsePort("9500", false, &p).ok());
  EXPECT_EQ(p, 9500);
  ASSERT_TRUE(ParsePort("1", false, &p).ok());
  EXPECT_EQ(p, 1);
  ASSERT_TRUE(ParsePort("65535", false, &p).ok());
  EXPECT_EQ(p, 65535);
  ASSERT_TRUE(ParsePort("0", /*allow_zero=*/true, &p).ok());
  EXPECT_EQ(p, 0);
  // "9k" used to be port 9216 (ParseSize's suffix).
  for (const char* text : {"9k", "9K", "1M", "", "0", "65536", "99999", "100000", "-1", " 1", "1 ",
                           "+1", "0x10", "1.5", "00000001"}) {
    p = 4242;
    Status st = ParsePort(text, /*allow_zero=*/false, &p);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "'" << text << "'";
    EXPECT_NE(st.message().find("1..65535"), std::string::npos) << st.ToString();
    EXPECT_EQ(p, 4242) << "'" << text << "' wrote the output";
  }
  Status st = ParsePort("9k", /*allow_zero=*/true, &p);
  EXPECT_NE(st.message().find("0..65535"), std::string::npos) << st.ToString();
}

TEST(FlagsTest, ParseHostPortSplitsAtTheLastColonAndNamesTheFlag) {
  std::string host = "unset";
  uint16_t port = 1;
  ASSERT_TRUE(
      ParseHostPort("--listen", "127.0.0.1:0", /*allow_zero_port=*/true, &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(ParseHostPort("--listen", "a:b:9500", false, &host, &port).ok());
  EXPECT_EQ(host, "a:b");
  EXPECT_EQ(port, 9500);
  for (const char* text : {"127.0.0.1:9k", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000"}) {
    host = "unset";
    Status st = ParseHostPort("--listen", text, true, &host, &port);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(st.message().find("--listen"), std::string::npos) << st.ToString();
    EXPECT_EQ(host, "unset") << text;
  }
}

// Issue 10: tokens from files, so they are not in ps.
TEST(ReadSecretFileTest, ReadsTheSecretWithoutTrailingNewlines) {
  char tmpl[] = "/var/tmp/tandem-secret-test-XXXXXX";
  int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ::close(fd);
  const std::string path = tmpl;
  auto write = [&](const std::string& text) { std::ofstream(path, std::ios::binary) << text; };
  std::string out;
  write("s3cret\n");
  ASSERT_TRUE(ReadSecretFile("--auth-token-file", path, &out).ok());
  EXPECT_EQ(out, "s3cret");
  write("s3cret\r\n");
  ASSERT_TRUE(ReadSecretFile("--auth-token-file", path, &out).ok());
  EXPECT_EQ(out, "s3cret");
  write("\n");
  Status st = ReadSecretFile("--auth-token-file", path, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--auth-token-file"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("empty"), std::string::npos) << st.ToString();
  write(std::string(5000, 'x'));
  EXPECT_EQ(ReadSecretFile("--auth-token-file", path, &out).code(), StatusCode::kInvalidArgument);
  write("hidden-value");
  ::unlink(path.c_str());
  st = ReadSecretFile("--mgmt-token-file", path, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(path), std::string::npos) << st.ToString();
  EXPECT_EQ(out, "s3cret");  // untouched on error
}

}  // namespace
}  // namespace tandem

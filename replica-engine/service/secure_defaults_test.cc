// Secure defaults (issue 10): loopback detection, the bind rule for an engine
// without tokens, the data_path rule of CreateReplica (realpath first) and the
// NBD TCP export rule.

#include "replica-engine/service/secure_defaults.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace tandem::service {
namespace {

TEST(IsLoopbackHostTest, OnlyLoopbackAddressesAndLocalhost) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("127.255.255.255"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("126.255.255.255"));
  EXPECT_FALSE(IsLoopbackHost(""));
  EXPECT_FALSE(IsLoopbackHost("[::]"));
  EXPECT_FALSE(IsLoopbackHost("example.com"));
  EXPECT_FALSE(IsLoopbackHost("127.1"));  // not a dotted quad
  EXPECT_FALSE(IsLoopbackHost(std::string("127.0.0.1\0x", 11)));
}

TEST(CheckBindAddressTest, NonLoopbackNeedsTheTokenOrInsecureBind) {
  EXPECT_TRUE(CheckBindAddress("--listen", "127.0.0.1:9500", false, "--auth-token", false).ok());
  EXPECT_TRUE(CheckBindAddress("--listen", "localhost:0", false, "--auth-token", false).ok());
  EXPECT_TRUE(
      CheckBindAddress("--grpc-listen", "unix:/run/t.sock", false, "--mgmt-token", false).ok());
  EXPECT_TRUE(
      CheckBindAddress("--grpc-listen", "unix:///run/t.sock", false, "--mgmt-token", false).ok());
  Status st = CheckBindAddress("--listen", "0.0.0.0:9500", false, "--auth-token", false);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  for (const char* want : {"--listen", "0.0.0.0:9500", "--auth-token", "--insecure-bind"}) {
    EXPECT_NE(st.message().find(want), std::string::npos) << want << ": " << st.ToString();
  }
  st = CheckBindAddress("--grpc-listen", "[::]:9600", false, "--mgmt-token", false);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--mgmt-token"), std::string::npos) << st.ToString();
  EXPECT_TRUE(CheckBindAddress("--listen", "0.0.0.0:9500", true, "--auth-token", false).ok());
  EXPECT_TRUE(CheckBindAddress("--listen", "0.0.0.0:9500", false, "--auth-token", true).ok());
}

TEST(UnprotectedWarningTest, NamesEachUnprotectedEndpoint) {
  EXPECT_EQ(UnprotectedWarning(true, "127.0.0.1:9500", true, "127.0.0.1:9600"), "");
  std::string both = UnprotectedWarning(false, "127.0.0.1:9500", false, "127.0.0.1:9600");
  for (const char* want : {"data port 127.0.0.1:9500", "--auth-token", "management API",
                           "127.0.0.1:9600", "--mgmt-token"}) {
    EXPECT_NE(both.find(want), std::string::npos) << want << ": " << both;
  }
  EXPECT_EQ(both.find('\n'), std::string::npos);
  std::string data = UnprotectedWarning(false, "127.0.0.1:9500", true, "127.0.0.1:9600");
  EXPECT_NE(data.find("--auth-token"), std::string::npos);
  EXPECT_EQ(data.find("--mgmt-token"), std::string::npos);
  std::string mgmt = UnprotectedWarning(true, "127.0.0.1:9500", false, "unix:/run/t.sock");
  EXPECT_EQ(mgmt.find("--auth-token"), std::string::npos);
  EXPECT_NE(mgmt.find("unix:/run/t.sock"), std::string::npos);
}

TEST(CheckNbdTcpAddressTest, LoopbackUnlessAllowed) {
  EXPECT_TRUE(CheckNbdTcpAddress("127.0.0.1:0", false).ok());
  EXPECT_TRUE(CheckNbdTcpAddress("127.0.0.2:10809", false).ok());
  Status st = CheckNbdTcpAddress("0.0.0.0:10809", false);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(st.message().rfind("nbd_tcp_address", 0), 0u) << st.ToString();
  EXPECT_NE(st.message().find("--allow-remote-nbd"), std::string::npos) << st.ToString();
  EXPECT_EQ(CheckNbdTcpAddress("10.1.2.3:10809", false).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(CheckNbdTcpAddress("0.0.0.0:10809", true).ok());
}

class CheckDataPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-secure-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    data_ = tmp_ + "/data";
    std::filesystem::create_directories(data_ + "/images");
    std::filesystem::create_directories(data_ + "/vol-2");
    Touch(data_ + "/vol-2/meta");
    Touch(data_ + "/vol-2/data");
    Touch(data_ + "/images/disk.img");
    Touch(data_ + "/flat.img");
    Touch(tmp_ + "/outside.img");
    Touch(tmp_ + "/device");
  }
  void TearDown() override { std::filesystem::remove_all(tmp_); }

  static void Touch(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0) << path;
    ::close(fd);
  }
  Status Check(const std::string& path, const std::vector<std::string>& allowed = {}) {
    return CheckDataPath(path, "vol-1", data_, allowed);
  }

  std::string tmp_;
  std::string data_;
};

TEST_F(CheckDataPathTest, FilesUnderTheDataDirAreAllowed) {
  EXPECT_TRUE(Check(data_ + "/images/disk.img").ok())
      << Check(data_ + "/images/disk.img").ToString();
  EXPECT_TRUE(Check(data_ + "/flat.img").ok());
  EXPECT_TRUE(Check(data_ + "/images/../flat.img").ok());
}

TEST_F(CheckDataPathTest, PathsOutsideTheDataDirAreDenied) {
  for (const std::string& path :
       {tmp_ + "/outside.img", data_ + "/../outside.img", std::string("/etc/passwd")}) {
    Status st = Check(path);
    EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << path << ": " << st.ToString();
    EXPECT_EQ(st.message().rfind("data_path", 0), 0u) << st.ToString();
    EXPECT_NE(st.message().find("--allowed-device"), std::string::npos) << st.ToString();
  }
  // The data dir itself is not a file under it.
  EXPECT_EQ(Check(data_).code(), StatusCode::kPermissionDenied);
}

TEST_F(CheckDataPathTest, SymlinksAreResolvedFirst) {
  // A link under the data dir to a file outside it is outside.
  std::filesystem::create_symlink(tmp_ + "/outside.img", data_ + "/images/link.img");
  EXPECT_EQ(Check(data_ + "/images/link.img").code(), StatusCode::kPermissionDenied);
  // A link outside to a file under the data dir is under it.
  std::filesystem::create_symlink(data_ + "/flat.img", tmp_ + "/to-flat");
  EXPECT_TRUE(Check(tmp_ + "/to-flat").ok());
  // A data dir reached through a link still contains its files.
  std::filesystem::create_directory_symlink(data_, tmp_ + "/data-link");
  EXPECT_TRUE(CheckDataPath(data_ + "/flat.img", "vol-1", tmp_ + "/data-link", {}).ok());
}

TEST_F(CheckDataPathTest, AnotherReplicasFilesAreDenied) {
  Status st = Check(data_ + "/vol-2/data");
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_EQ(st.message().rfind("data_path", 0), 0u) << st.ToString();
  EXPECT_EQ(Check(data_ + "/vol-2/meta").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Check(data_ + "/images/../vol-2/data").code(), StatusCode::kPermissionDenied);
  std::filesystem::create_directories(data_ + "/vol-1");
  Touch(data_ + "/vol-1/x.img");
  EXPECT_EQ(Check(data_ + "/vol-1/x.img").code(), StatusCode::kPermissionDenied);
  // <dir>/data is what a future replica named <dir> would own.
  Touch(data_ + "/images/data");
  EXPECT_EQ(Check(data_ + "/images/data").code(), StatusCode::kPermissionDenied);
}

TEST_F(CheckDataPathTest, AllowedDevicesMatchAfterResolving) {
  EXPECT_EQ(Check(tmp_ + "/device").code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(Check(tmp_ + "/device", {tmp_ + "/device"}).ok());
  std::filesystem::create_symlink(tmp_ + "/device", tmp_ + "/by-id");
  EXPECT_TRUE(Check(tmp_ + "/device", {tmp_ + "/by-id"}).ok());
  EXPECT_TRUE(Check(tmp_ + "/by-id", {tmp_ + "/device"}).ok());
  EXPECT_TRUE(Check(tmp_ + "/./device", {tmp_ + "/device"}).ok());
  EXPECT_EQ(Check(tmp_ + "/outside.img", {tmp_ + "/device"}).code(), StatusCode::kPermissionDenied);
}

TEST_F(CheckDataPathTest, AMissingPathIsInvalidArgument) {
  Status st = Check(data_ + "/nope.img");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_EQ(st.message().rfind("data_path", 0), 0u) << st.ToString();
}

}  // namespace
}  // namespace tandem::service

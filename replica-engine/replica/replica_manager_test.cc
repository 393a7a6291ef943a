#include "replica-engine/replica/replica_manager.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "replica-engine/backend/backend_factory.h"

namespace tandem::replica {
namespace {

constexpr uint64_t kSize = 16ull << 20;

bool Exists(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0;
}

ReplicaConfig Config(const std::string& volume_id, const std::string& replica_id = "r1") {
  ReplicaConfig c;
  c.volume_id = volume_id;
  c.replica_id = replica_id;
  c.size = kSize;
  return c;
}

class ReplicaManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-manager-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    root_ = tmp_ + "/replicas";  // created by LoadAll
    auto b = backend::BackendFactory::Create("auto");
    if (!b.ok()) GTEST_SKIP() << "no backend: " << b.status().ToString();
    backend_ = std::move(*b);
    manager_ = std::make_unique<ReplicaManager>(backend_.get(), root_);
  }
  void TearDown() override {
    manager_.reset();
    std::filesystem::remove_all(tmp_);
  }

  // Replaces the manager, as a process restart would.
  void Restart(bool clean) {
    if (clean) {
      ASSERT_TRUE(manager_->CloseAll().ok());
    }
    manager_ = std::make_unique<ReplicaManager>(backend_.get(), root_);
  }

  std::string tmp_;
  std::string root_;
  std::unique_ptr<backend::StorageBackend> backend_;
  std::unique_ptr<ReplicaManager> manager_;
};

TEST_F(ReplicaManagerTest, LoadAllFindsReplicasOfPreviousManager) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_TRUE(manager_->List().empty());
  ASSERT_TRUE(manager_->Create(Config("vol-a")).ok());
  auto b = manager_->Create(Config("vol-b", "r2"));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->SetHighestEpoch(9).ok());
  b = Status::NotFound("released");

  Restart(/*clean=*/true);
  EXPECT_EQ(manager_->Get("vol-a").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_EQ(manager_->List().size(), 2u);
  auto a = manager_->Get("vol-a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE((*a)->was_clean());
  EXPECT_EQ((*a)->metadata().replica_id, "r1");
  auto b2 = manager_->Get("vol-b");
  ASSERT_TRUE(b2.ok());
  EXPECT_EQ((*b2)->metadata().replica_id, "r2");
  EXPECT_EQ((*b2)->metadata().highest_epoch, 9u);
  // A second LoadAll keeps the open replicas.
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_EQ(manager_->Get("vol-a")->get(), a->get());

  a = Status::NotFound("released");
  b2 = Status::NotFound("released");
  Restart(/*clean=*/false);
  ASSERT_TRUE(manager_->LoadAll().ok());
  auto a3 = manager_->Get("vol-a");
  ASSERT_TRUE(a3.ok());
  EXPECT_FALSE((*a3)->was_clean());
}

TEST_F(ReplicaManagerTest, RootItCreatesIsPrivate) {
  const mode_t old_umask = ::umask(0);
  Status st = manager_->LoadAll();
  ::umask(old_umask);
  ASSERT_TRUE(st.ok()) << st.ToString();
  struct stat sb;
  ASSERT_EQ(::stat(root_.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 07777, 0700u);
}

TEST_F(ReplicaManagerTest, AVolumeBeingDeletedCannotBeOpenedOrCreated) {
  ASSERT_TRUE(manager_->Create(Config("vol-1")).ok());
  ASSERT_TRUE(manager_->Create(Config("vol-2", "r2")).ok());
  manager_->BeginDelete("vol-1");
  manager_->BeginDelete("vol-1");  // idempotent
  EXPECT_TRUE(manager_->IsDeleting("vol-1"));
  EXPECT_EQ(manager_->Get("vol-1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(manager_->Create(Config("vol-1")).status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(manager_->Get("vol-2").ok());  // other volumes unaffected
  // Given up: served again.
  manager_->EndDelete("vol-1");
  EXPECT_TRUE(manager_->Get("vol-1").ok());
  // Delete ends the mark, also for a volume that is not there.
  manager_->BeginDelete("vol-1");
  ASSERT_TRUE(manager_->Delete("vol-1").ok());
  EXPECT_FALSE(manager_->IsDeleting("vol-1"));
  EXPECT_EQ(manager_->Get("vol-1").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(manager_->Create(Config("vol-1")).ok());
  EXPECT_TRUE(manager_->Get("vol-1").ok());
  manager_->BeginDelete("never-existed");
  ASSERT_TRUE(manager_->Delete("never-existed").ok());
  EXPECT_FALSE(manager_->IsDeleting("never-existed"));
}

TEST_F(ReplicaManagerTest, CreateIsIdempotent) {
  auto first = manager_->Create(Config("vol-1"));  // root created on demand
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = manager_->Create(Config("vol-1"));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->get(), second->get());
  EXPECT_EQ(manager_->List().size(), 1u);

  ReplicaConfig bigger = Config("vol-1");
  bigger.size *= 2;
  auto conflict = manager_->Create(bigger);
  EXPECT_EQ(conflict.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(conflict.status().message().find("size"), std::string::npos)
      << conflict.status().ToString();

  auto other_id = manager_->Create(Config("vol-1", "r9"));
  EXPECT_EQ(other_id.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(other_id.status().message().find("replica_id"), std::string::npos)
      << other_id.status().ToString();
}

TEST_F(ReplicaManagerTest, AReplicaWithASecretIsDeletedWithItsDirectory) {
  ReplicaConfig c = Config("vol-s");
  c.secret = "0123456789abcdef-volume-secret";
  ASSERT_TRUE(manager_->Create(c).ok());
  ASSERT_TRUE(std::filesystem::exists(root_ + "/vol-s/secret"));
  Status st = manager_->Delete("vol-s");
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(std::filesystem::exists(root_ + "/vol-s"));
}

TEST_F(ReplicaManagerTest, ConcurrentCreatesYieldOneReplica) {
  std::vector<std::shared_ptr<Replica>> got(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] {
      auto r = manager_->Create(Config("vol-1"));
      if (r.ok()) got[i] = *r;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : got) {
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r.get(), got[0].get());
  }
}

TEST_F(ReplicaManagerTest, InvalidVolumeIdIsRejected) {
  EXPECT_EQ(manager_->Create(Config("../escape")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->Delete("..").code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(tmp_ + "/escape"));
}

TEST_F(ReplicaManagerTest, GetUnknownIsNotFound) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_EQ(manager_->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(ReplicaManagerTest, DeleteRemovesFilesAndIsIdempotent) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  auto r = manager_->Create(Config("vol-1"));
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(manager_->Create(Config("vol-2")).ok());
  const std::string dir = root_ + "/vol-1";
  ASSERT_TRUE(Exists(dir + "/data"));

  ASSERT_TRUE(manager_->Delete("vol-1").ok());
  EXPECT_FALSE(Exists(dir));
  EXPECT_EQ(manager_->Get("vol-1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*r)->fd(), -1);  // a holder's replica is closed, not dangling
  EXPECT_TRUE(manager_->Delete("vol-1").ok());
  EXPECT_TRUE(manager_->Delete("never-existed").ok());
  EXPECT_TRUE(manager_->Get("vol-2").ok());
  EXPECT_TRUE(Exists(root_ + "/vol-2/meta"));

  // The id can be reused afterwards.
  auto again = manager_->Create(Config("vol-1"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->metadata().highest_epoch, 0u);
}

TEST_F(ReplicaManagerTest, DeleteKeepsUserDataPath) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  const std::string file = tmp_ + "/backing";
  int fd = ::open(file.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  ::close(fd);
  ReplicaConfig c = Config("vol-1");
  c.data_path = file;
  ASSERT_TRUE(manager_->Create(c).ok());
  ASSERT_TRUE(manager_->Delete("vol-1").ok());
  EXPECT_FALSE(Exists(root_ + "/vol-1"));
  EXPECT_TRUE(Exists(file));
}

TEST_F(ReplicaManagerTest, CorruptReplicaIsSkippedOthersLoad) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  ASSERT_TRUE(manager_->Create(Config("good-1")).ok());
  ASSERT_TRUE(manager_->Create(Config("bad")).ok());
  ASSERT_TRUE(manager_->Create(Config("good-2")).ok());
  Restart(/*clean=*/true);

  // Garble the whole meta file, keeping its size.
  const std::string meta = root_ + "/bad/meta";
  struct stat sb;
  ASSERT_EQ(::stat(meta.c_str(), &sb), 0);
  int fd = ::open(meta.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  std::string junk(static_cast<size_t>(sb.st_size), '\x5a');
  ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  // Not replicas, and not failures: a stray file and a directory without meta.
  ASSERT_EQ(::mkdir((root_ + "/half-created").c_str(), 0755), 0);
  fd = ::open((root_ + "/README").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ::close(fd);

  Status st = manager_->LoadAll();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("1 replica"), std::string::npos) << st.ToString();
  EXPECT_EQ(manager_->List().size(), 2u);
  EXPECT_TRUE(manager_->Get("good-1").ok());
  EXPECT_TRUE(manager_->Get("good-2").ok());
  EXPECT_EQ(manager_->Get("bad").status().code(), StatusCode::kNotFound);

  // An unloadable replica can still be deleted.
  ASSERT_TRUE(manager_->Delete("bad").ok());
  EXPECT_FALSE(Exists(root_ + "/bad"));
  Restart(/*clean=*/true);
  EXPECT_TRUE(manager_->LoadAll().ok());
  EXPECT_EQ(manager_->List().size(), 2u);
}

TEST_F(ReplicaManagerTest, CloseAllMarksEveryReplicaClean) {
  ASSERT_TRUE(manager_->LoadAll().ok());
  ASSERT_TRUE(manager_->Create(Config("vol-1")).ok());
  ASSERT_TRUE(manager_->Create(Config("vol-2")).ok());
  ASSERT_TRUE(manager_->CloseAll().ok());
  EXPECT_TRUE(manager_->List().empty());
  for (const char* id : {"vol-1", "vol-2"}) {
    auto f = MetadataFile::Open(root_ + "/" + id + "/meta");
    ASSERT_TRUE(f.ok());
    EXPECT_TRUE((*f)->current().clean_shutdown) << id;
  }
}

}  // namespace
}  // namespace tandem::replica

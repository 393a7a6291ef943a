#pragma once
// NbdServerFixture: the NbdServer tests' common harness. An NbdServer on an
// EventLoop thread over a MemoryBlockDevice, exporting "vol" on a unix
// socket in a temp dir; closures run on the loop thread (bounded waits);
// shutdown through NbdServer::Shutdown. Header-only, for tests.

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "gtest/gtest.h"
#include "replica-engine/frontend/nbd_server.h"
#include "tests/support/memory_block_device.h"
#include "tests/support/nbd_raw_client.h"

namespace tandem::frontend::testing {

class NbdServerFixture : public ::testing::Test {
 protected:
  static constexpr const char* kExportName = "vol";
  static constexpr auto kFixtureWait = std::chrono::seconds(30);

  void SetUp() override {
    char tmpl[] = "/var/tmp/nbd_server_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/vol.sock";
  }
  void TearDown() override {
    StopServer();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Options left empty get the fixture's export name and socket.
  void StartServer(MemoryBlockDeviceOptions dev = {}, NbdServerOptions opts = {}) {
    loop_ = std::make_unique<EventLoop>();
    ASSERT_TRUE(loop_->init_status().ok());
    device_ = std::make_unique<MemoryBlockDevice>(loop_.get(), dev);
    ASSERT_TRUE(device_->init_status().ok());
    if (opts.export_name.empty()) opts.export_name = kExportName;
    if (opts.unix_path.empty()) opts.unix_path = socket_;
    server_ = std::make_unique<NbdServer>(loop_.get(), device_.get(), opts);
    Status st = server_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
    thread_ = std::thread([this] { loop_->Run(); });
  }

  // Runs fn on the loop thread and waits (bounded) for it.
  void OnLoop(std::function<void()> fn) {
    auto p = std::make_shared<std::promise<void>>();
    auto f = p->get_future();
    loop_->Post([fn = std::move(fn), p] {
      fn();
      p->set_value();
    });
    ASSERT_EQ(f.wait_for(kFixtureWait), std::future_status::ready)
        << "loop did not run the closure";
  }
  NbdServerStats Stats() {
    NbdServerStats s;
    OnLoop([&] { s = server_->stats(); });
    return s;
  }
  // Polls `cond` on the loop thread until true or the bound passes.
  bool WaitFor(std::function<bool()> cond) {
    auto deadline = std::chrono::steady_clock::now() + kFixtureWait;
    while (std::chrono::steady_clock::now() < deadline) {
      bool ok = false;
      OnLoop([&] { ok = cond(); });
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  void StopServer() {
    if (!thread_.joinable()) return;
    if (server_ != nullptr) {
      auto p = std::make_shared<std::promise<void>>();
      auto f = p->get_future();
      auto* holder = new std::shared_ptr<std::promise<void>>(p);
      loop_->Post([this, holder] {
        server_->Shutdown(
            [](void* arg) {
              auto* h = static_cast<std::shared_ptr<std::promise<void>>*>(arg);
              (*h)->set_value();
              delete h;
            },
            holder);
      });
      EXPECT_EQ(f.wait_for(kFixtureWait), std::future_status::ready) << "Shutdown did not finish";
    }
    loop_->Stop();
    thread_.join();
    server_.reset();
    device_.reset();
    loop_.reset();
  }

  // Another connection completes a handshake and a 4 KiB write/read round
  // trip at `offset`: the server still serves after whatever the test did.
  void ExpectStillServing(uint64_t offset = 8192) {
    RawClient c(socket_);
    ASSERT_TRUE(c.Connect());
    std::vector<uint8_t> data(4096);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(42 + i * 7);
    ASSERT_EQ(c.Write(offset, data), 0u);
    std::vector<uint8_t> back;
    ASSERT_EQ(c.Read(offset, 4096, &back), 0u);
    EXPECT_EQ(back, data);
  }

  std::string dir_;
  std::string socket_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<MemoryBlockDevice> device_;
  std::unique_ptr<NbdServer> server_;
  std::thread thread_;
};

}  // namespace tandem::frontend::testing

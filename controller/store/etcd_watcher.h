#pragma once
// EtcdWatcher: one etcd Watch stream over a key prefix (EtcdStore::Watch).
//
// A reader thread moves the stream's events into a queue that Next drains,
// so Next can honour its timeout (a blocking gRPC Read cannot). The stream
// ends with the Watcher: the destructor cancels it and joins the thread.

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/thread_annotations.h"
#include "controller/store/metadata_store.h"
#include "controller/store/proto/etcd/rpc.grpc.pb.h"

namespace tandem::store {

class EtcdWatcher final : public Watcher {
 public:
  // Opens the stream and waits (up to `timeout`) for etcd to confirm it.
  static Result<std::unique_ptr<EtcdWatcher>> Start(std::shared_ptr<grpc::Channel> channel,
                                                    std::string_view prefix, int64_t after_revision,
                                                    std::chrono::milliseconds timeout);
  ~EtcdWatcher() override;

  Result<std::vector<WatchEvent>> Next(std::chrono::milliseconds timeout) override;

 private:
  explicit EtcdWatcher(std::shared_ptr<grpc::Channel> channel);
  void ReadLoop();

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcdserverpb::Watch::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
      stream_;
  std::thread reader_;

  Mutex mu_;
  std::condition_variable cv_;
  std::deque<WatchEvent> queue_ GUARDED_BY(mu_);
  bool created_ GUARDED_BY(mu_) = false;
  bool done_ GUARDED_BY(mu_) = false;  // the stream ended
  Status error_ GUARDED_BY(mu_);       // why it ended
};

}  // namespace tandem::store

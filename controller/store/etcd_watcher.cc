#include "controller/store/etcd_watcher.h"

#include "controller/store/etcd_store.h"
#include "controller/store/txn_validation.h"

namespace tandem::store {

EtcdWatcher::EtcdWatcher(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(etcdserverpb::Watch::NewStub(channel_)) {}

Result<std::unique_ptr<EtcdWatcher>> EtcdWatcher::Start(std::shared_ptr<grpc::Channel> channel,
                                                        std::string_view prefix,
                                                        int64_t after_revision,
                                                        std::chrono::milliseconds timeout) {
  std::unique_ptr<EtcdWatcher> w(new EtcdWatcher(std::move(channel)));
  w->stream_ = w->stub_->Watch(&w->ctx_);
  etcdserverpb::WatchRequest req;
  auto* create = req.mutable_create_request();
  const std::string end = PrefixEnd(prefix);
  // etcd: key "\0" is the smallest key; range_end "\0" means no upper bound.
  create->set_key(prefix.empty() ? std::string(1, '\0') : std::string(prefix));
  create->set_range_end(end.empty() ? std::string(1, '\0') : end);
  // etcd's start_revision is inclusive and 0 means "now".
  create->set_start_revision(after_revision > 0 ? after_revision + 1 : 0);
  if (!w->stream_->Write(req)) {
    grpc::Status st = w->stream_->Finish();
    return EtcdError("watch",
                     st.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream closed") : st);
  }
  w->reader_ = std::thread([raw = w.get()] { raw->ReadLoop(); });
  {
    MutexLock lock(&w->mu_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!w->created_ && !w->done_ && lock.WaitUntil(&w->cv_, deadline)) {
    }
    if (!w->created_ && !w->done_) {
      return Status::Unavailable("etcd watch: not confirmed within the request timeout");
    }
    if (!w->created_) return w->error_;
  }
  return w;
}

EtcdWatcher::~EtcdWatcher() {
  ctx_.TryCancel();
  if (reader_.joinable()) reader_.join();
}

void EtcdWatcher::ReadLoop() {
  etcdserverpb::WatchResponse resp;
  while (stream_->Read(&resp)) {
    MutexLock lock(&mu_);
    if (resp.created()) created_ = true;
    for (const auto& ev : resp.events()) {
      WatchEvent e;
      e.kind =
          ev.type() == mvccpb::Event::DELETE ? WatchEvent::Kind::kDelete : WatchEvent::Kind::kPut;
      e.kv = KeyValue{.key = ev.kv().key(),
                      .value = ev.kv().value(),
                      .create_revision = ev.kv().create_revision(),
                      .mod_revision = ev.kv().mod_revision(),
                      .version = ev.kv().version()};
      queue_.push_back(std::move(e));
    }
    if (resp.canceled()) {
      error_ = resp.compact_revision() > 0
                   ? Status::OutOfRange("etcd watch: history compacted up to revision " +
                                        std::to_string(resp.compact_revision()))
                   : Status::Unavailable("etcd watch canceled: " + resp.cancel_reason());
      done_ = true;
      ctx_.TryCancel();  // our only watch on this stream: end it
    }
    cv_.notify_all();
  }
  grpc::Status st = stream_->Finish();
  MutexLock lock(&mu_);
  if (!done_) {
    error_ = EtcdError("watch",
                       st.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream ended") : st);
    done_ = true;
  }
  cv_.notify_all();
}

Result<std::vector<WatchEvent>> EtcdWatcher::Next(std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (queue_.empty() && !done_ && lock.WaitUntil(&cv_, deadline)) {
  }
  if (!queue_.empty()) {
    std::vector<WatchEvent> out(std::make_move_iterator(queue_.begin()),
                                std::make_move_iterator(queue_.end()));
    queue_.clear();
    return out;
  }
  if (done_) return error_;
  return std::vector<WatchEvent>();
}

}  // namespace tandem::store

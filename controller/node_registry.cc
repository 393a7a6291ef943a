#include "controller/node_registry.h"

#include <google/protobuf/util/message_differencer.h>

#include "common/logging.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "node_registry";

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}
}  // namespace

NodeRegistry::NodeRegistry(Records* records, EngineDirectory* engines, NodeRegistryOptions options)
    : records_(records), engines_(engines), options_(options) {}

NodeRegistry::~NodeRegistry() { Stop(); }

Status NodeRegistry::Load() {
  TANDEM_ASSIGN_OR_RETURN(auto nodes, records_->ListNodes());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& n : nodes) {
    auto& e = nodes_[n.node_id()];
    e.record = std::move(n);
  }
  return Status::Ok();
}

Status NodeRegistry::Register(const rec::NodeRecord& record) {
  if (!ValidId(record.node_id())) {
    return Status::InvalidArgument("node_id must be [A-Za-z0-9._-]{1,128}, got \"" +
                                   record.node_id() + "\"");
  }
  if (record.engine_address().empty()) {
    return Status::InvalidArgument("engine_address missing in request");
  }
  bool same = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = nodes_.find(record.node_id());
    if (it != nodes_.end()) {
      rec::NodeRecord a = it->second.record, b = record;
      a.clear_registered_unix_ms();
      b.clear_registered_unix_ms();
      same = google::protobuf::util::MessageDifferencer::Equals(a, b);
    }
  }
  if (!same) {
    TANDEM_RETURN_IF_ERROR(records_->PutNode(record));
    std::lock_guard<std::mutex> lock(mu_);
    auto& e = nodes_[record.node_id()];
    if (e.record.engine_address() != record.engine_address()) {
      e.last_seen = {};
      e.info.Clear();
    }
    e.record = record;
    TLOG_INFO(kTag, "node %s registered: engine %s", record.node_id().c_str(),
              record.engine_address().c_str());
  }
  PollOne(record.node_id(), record.engine_address());
  return Status::Ok();
}

void NodeRegistry::PollOne(const std::string& node_id, const std::string& address) {
  auto info = engines_->GetEngineInfo(address, options_.rpc_timeout);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end() || it->second.record.engine_address() != address) return;
  Entry& e = it->second;
  e.polled = true;
  if (info.ok()) {
    if (!e.last_error.empty() || e.last_seen == std::chrono::steady_clock::time_point{}) {
      TLOG_INFO(kTag, "node %s: engine %s answers (data %s)", node_id.c_str(), address.c_str(),
                info->data_address().c_str());
    }
    e.info = std::move(*info);
    e.last_seen = std::chrono::steady_clock::now();
    e.last_error.clear();
  } else {
    std::string err = info.status().ToString();
    if (err != e.last_error) {
      TLOG_WARN(kTag, "node %s: heartbeat to engine %s failed: %s", node_id.c_str(),
                address.c_str(), err.c_str());
    }
    e.last_error = std::move(err);
  }
}

void NodeRegistry::PollAll() {
  std::vector<std::pair<std::string, std::string>> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : nodes_) targets.emplace_back(id, e.record.engine_address());
  }
  for (const auto& [id, address] : targets) PollOne(id, address);
}

void NodeRegistry::PollUnseen() {
  std::vector<std::pair<std::string, std::string>> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : nodes_) {
      if (!e.polled) targets.emplace_back(id, e.record.engine_address());
    }
  }
  for (const auto& [id, address] : targets) PollOne(id, address);
}

void NodeRegistry::Start() {
  std::lock_guard<std::mutex> guard(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      lock.unlock();
      PollAll();
      lock.lock();
      cv_.wait_for(lock, options_.heartbeat_interval, [this] { return stop_; });
    }
  });
}

void NodeRegistry::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

NodeView NodeRegistry::ViewOf(const Entry& e, std::chrono::steady_clock::time_point now) const {
  NodeView v;
  v.record = e.record;
  v.info = e.info;
  v.last_error = e.last_error;
  if (e.last_seen != std::chrono::steady_clock::time_point{}) {
    auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - e.last_seen);
    v.last_seen_ms_ago = age.count();
    v.up = age < options_.grace;
  }
  return v;
}

std::vector<NodeView> NodeRegistry::Snapshot() const {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<NodeView> out;
  out.reserve(nodes_.size());
  for (const auto& [id, e] : nodes_) out.push_back(ViewOf(e, now));
  return out;
}

std::optional<NodeView> NodeRegistry::Get(const std::string& node_id) const {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return std::nullopt;
  return ViewOf(it->second, now);
}

}  // namespace tandem::controller

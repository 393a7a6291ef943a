#include "controller/store/etcd_store.h"

#include <grpcpp/grpcpp.h>

#include <cctype>
#include <fstream>
#include <sstream>

#include "controller/store/etcd_watcher.h"
#include "controller/store/txn_validation.h"

namespace tandem::store {

namespace {

KeyValue FromProto(const mvccpb::KeyValue& kv) {
  return KeyValue{.key = kv.key(),
                  .value = kv.value(),
                  .create_revision = kv.create_revision(),
                  .mod_revision = kv.mod_revision(),
                  .version = kv.version()};
}

void ToProto(const Compare& c, etcdserverpb::Compare* out) {
  out->set_key(c.key);
  switch (c.kind) {
    case Compare::Kind::kExists:
      out->set_target(etcdserverpb::Compare::CREATE);
      out->set_result(etcdserverpb::Compare::GREATER);
      out->set_create_revision(0);
      break;
    case Compare::Kind::kAbsent:
      out->set_target(etcdserverpb::Compare::CREATE);
      out->set_result(etcdserverpb::Compare::EQUAL);
      out->set_create_revision(0);
      break;
    case Compare::Kind::kModRevisionEquals:
      out->set_target(etcdserverpb::Compare::MOD);
      out->set_result(etcdserverpb::Compare::EQUAL);
      out->set_mod_revision(c.mod_revision);
      break;
  }
}

void ToProto(const Op& op, etcdserverpb::RequestOp* out) {
  if (op.kind == Op::Kind::kPut) {
    auto* put = out->mutable_request_put();
    put->set_key(op.key);
    put->set_value(op.value);
  } else {
    out->mutable_request_delete_range()->set_key(op.key);
  }
}

// gRPC target for the endpoint list (see the header).
std::string ChannelTarget(const std::vector<std::string>& endpoints) {
  bool numeric = true;
  for (const std::string& e : endpoints) {
    for (char c : e) {
      if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == ':')) numeric = false;
    }
  }
  if (!numeric) return "dns:///" + endpoints.front();
  std::string target = "ipv4:";
  for (size_t i = 0; i < endpoints.size(); ++i) {
    if (i) target += ',';
    target += endpoints[i];
  }
  return target;
}

Result<std::string> ReadPem(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("etcd TLS: cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().find("-----BEGIN") == std::string::npos) {
    return Status::InvalidArgument("etcd TLS: " + path + " is not PEM");
  }
  return ss.str();
}

}  // namespace

Status EtcdError(std::string_view what, const grpc::Status& status) {
  std::string msg = "etcd " + std::string(what) + ": " + status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Status::Unavailable(msg);
    default:
      return Status(static_cast<StatusCode>(status.error_code()), msg);
  }
}

Status EtcdStore::RpcError(std::string_view what, const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) Reconnect();
  return EtcdError(what, status);
}

EtcdStore::EtcdStore(std::string target, const StoreOptions& options,
                     std::optional<grpc::SslCredentialsOptions> tls)
    : options_(options),
      election_key_("/tandem/election/" + options.election_name),
      target_(std::move(target)),
      tls_(std::move(tls)),
      conn_(Connect()),
      last_reconnect_(std::chrono::steady_clock::now()) {
  keepalive_ = std::thread([this] { KeepAliveLoop(); });
}

std::shared_ptr<EtcdStore::Connection> EtcdStore::Connect() const {
  grpc::ChannelArguments args;
  // Large Range pages may exceed gRPC's 4 MiB default; etcd bounds requests.
  args.SetMaxReceiveMessageSize(-1);
  // Our own subchannels: a shared one may sit in another channel's backoff.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto c = std::make_shared<Connection>();
  c->channel = grpc::CreateCustomChannel(
      target_, tls_ ? grpc::SslCredentials(*tls_) : grpc::InsecureChannelCredentials(), args);
  c->kv = etcdserverpb::KV::NewStub(c->channel);
  c->lease = etcdserverpb::Lease::NewStub(c->channel);
  return c;
}

std::shared_ptr<EtcdStore::Connection> EtcdStore::conn() const {
  MutexLock lock(&conn_mu_);
  return conn_;
}

void EtcdStore::Reconnect() {
  MutexLock lock(&conn_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_reconnect_ < std::chrono::milliseconds(500)) return;
  last_reconnect_ = now;
  conn_ = Connect();  // RPCs in flight keep the old one alive until they end
}

Result<std::unique_ptr<EtcdStore>> EtcdStore::Open(const std::vector<std::string>& endpoints,
                                                   const StoreOptions& options) {
  if (endpoints.empty()) return Status::InvalidArgument("etcd store needs at least one endpoint");
  std::optional<grpc::SslCredentialsOptions> tls;
  if (!options.tls_ca_file.empty()) {
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
      return Status::InvalidArgument(
          "etcd TLS: give both tls_cert_file and tls_key_file, or neither");
    }
    tls.emplace();
    TANDEM_ASSIGN_OR_RETURN(tls->pem_root_certs, ReadPem(options.tls_ca_file));
    if (!options.tls_cert_file.empty()) {
      TANDEM_ASSIGN_OR_RETURN(tls->pem_cert_chain, ReadPem(options.tls_cert_file));
      TANDEM_ASSIGN_OR_RETURN(tls->pem_private_key, ReadPem(options.tls_key_file));
    }
  } else if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    return Status::InvalidArgument("etcd TLS: a client certificate needs tls_ca_file too");
  }
  std::unique_ptr<EtcdStore> store(
      new EtcdStore(ChannelTarget(endpoints), options, std::move(tls)));
  // Reachability check: one linearizable read.
  auto probe = store->Get(store->election_key_);
  if (!probe.ok()) return probe.status();
  return store;
}

EtcdStore::~EtcdStore() {
  (void)Resign();
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.notify_all();
  keepalive_.join();
}

void EtcdStore::SetDeadline(grpc::ClientContext* ctx) const {
  ctx->set_deadline(std::chrono::system_clock::now() + options_.request_timeout);
}

Result<std::optional<KeyValue>> EtcdStore::Get(std::string_view key) {
  TANDEM_RETURN_IF_ERROR(ValidateKey(key));
  etcdserverpb::RangeRequest req;
  req.set_key(std::string(key));
  etcdserverpb::RangeResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status st = conn()->kv->Range(&ctx, req, &resp);
  if (!st.ok()) return RpcError("get", st);
  if (resp.kvs_size() == 0) return std::optional<KeyValue>();
  return std::optional<KeyValue>(FromProto(resp.kvs(0)));
}

Result<RangeResult> EtcdStore::Range(std::string_view prefix, std::string_view start_after,
                                     size_t limit) {
  std::string lo(prefix);
  if (!start_after.empty()) {
    std::string after = std::string(start_after) + '\0';
    if (after > lo) lo = std::move(after);
  }
  std::string hi = PrefixEnd(prefix);
  etcdserverpb::RangeRequest req;
  // etcd: key "\0" is the smallest key; range_end "\0" means "no upper bound".
  req.set_key(lo.empty() ? std::string(1, '\0') : lo);
  req.set_range_end(hi.empty() ? std::string(1, '\0') : hi);
  req.set_limit(static_cast<int64_t>(limit));
  etcdserverpb::RangeResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status st = conn()->kv->Range(&ctx, req, &resp);
  if (!st.ok()) return RpcError("range", st);
  RangeResult out;
  out.revision = resp.header().revision();
  out.more = resp.more();
  out.kvs.reserve(resp.kvs_size());
  for (const auto& kv : resp.kvs()) out.kvs.push_back(FromProto(kv));
  return out;
}

Result<TxnResult> EtcdStore::Txn(const TxnRequest& txn) {
  TANDEM_RETURN_IF_ERROR(ValidateTxn(txn));
  etcdserverpb::TxnRequest inner;
  for (const Compare& c : txn.compares) ToProto(c, inner.add_compare());
  for (const Op& op : txn.ops) ToProto(op, inner.add_success());

  etcdserverpb::TxnRequest req;
  const int64_t leader_rev = leader_create_revision_.load();
  if (txn.require_leader) {
    if (!IsLeader()) {
      return Status::FailedPrecondition("this controller is not the leader (etcd election key " +
                                        election_key_ + ")");
    }
    // Fence: the txn applies only while our election key (same
    // create_revision) still exists, i.e. our lease has not expired.
    auto* fence = req.add_compare();
    fence->set_key(election_key_);
    fence->set_target(etcdserverpb::Compare::CREATE);
    fence->set_result(etcdserverpb::Compare::EQUAL);
    fence->set_create_revision(leader_rev);
    *req.add_success()->mutable_request_txn() = std::move(inner);
  } else {
    req = std::move(inner);
  }

  etcdserverpb::TxnResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status st = conn()->kv->Txn(&ctx, req, &resp);
  if (!st.ok()) return RpcError("txn", st);
  TxnResult out{.succeeded = resp.succeeded(), .revision = resp.header().revision()};
  if (txn.require_leader) {
    if (!resp.succeeded()) {
      // Our key is gone: the lease expired (or was revoked). Leadership is
      // lost; only a new Campaign can win it back.
      int64_t expected = leader_rev;
      if (leader_create_revision_.compare_exchange_strong(expected, 0)) leading_.store(false);
      return Status::FailedPrecondition("leadership lost: election key " + election_key_ +
                                        " no longer ours");
    }
    out.succeeded = resp.responses_size() == 1 && resp.responses(0).response_txn().succeeded();
  }
  return out;
}

Result<std::unique_ptr<Watcher>> EtcdStore::Watch(std::string_view prefix, int64_t after_revision) {
  if (after_revision < 0) return Status::InvalidArgument("watch after a negative revision");
  auto w = EtcdWatcher::Start(conn()->channel, prefix, after_revision, options_.request_timeout);
  if (!w.ok()) {
    if (w.status().code() == StatusCode::kUnavailable) Reconnect();
    return w.status();
  }
  return std::unique_ptr<Watcher>(std::move(w).value());
}

}  // namespace tandem::store

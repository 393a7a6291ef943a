#pragma once
// EtcdProcess: a real single-member etcd (Debian's /usr/bin/etcd from
// etcd-server) for tests, on 127.0.0.1 at free ports with a temporary data
// directory. Reusable by any test that needs etcd (store conformance,
// controller tests):
//
//   auto etcd = tandem::store::testing::EtcdProcess::Start();
//   ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
//   auto store = tandem::store::OpenStore((*etcd)->uri());
//
// Lifetime: the destructor SIGKILLs etcd, reaps it and removes the data
// directory. etcd is also started with PR_SET_PDEATHSIG=SIGKILL, so it dies
// with the test process even if the test crashes or is killed by a timeout:
// no test leaves an etcd running. PDEATHSIG fires when the *thread* that
// called Start (or Restart) exits, so call them from a thread that outlives
// the EtcdProcess (the test's main thread). Not thread-safe; one owner.

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::store::testing {

// TLS on the client port (peers stay plain: they are all on 127.0.0.1).
struct EtcdTls {
  std::string cert_file;       // server certificate (PEM); empty: no TLS
  std::string key_file;        // its key
  std::string client_ca_file;  // non-empty: require client certificates signed by it
};

struct EtcdOptions {
  // The etcd binary; empty: $TANDEM_ETCD, else /usr/bin/etcd.
  std::string binary;
  // How long Start (and Restart) wait for /health to answer true.
  std::chrono::milliseconds start_timeout{30000};
  EtcdTls tls;
};

class EtcdProcess {
 public:
  // Starts etcd and waits until it serves. UNAVAILABLE if it does not come
  // up in time (the tail of its log is in the message); NOT_FOUND if the
  // binary is missing (callers usually GTEST_SKIP then).
  static Result<std::unique_ptr<EtcdProcess>> Start(const EtcdOptions& options = {});
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // "127.0.0.1:<client port>".
  const std::string& endpoint() const { return endpoint_; }
  // "etcd://127.0.0.1:<client port>", for OpenStore (with TLS, also set
  // StoreOptions::tls_*).
  std::string uri() const { return "etcd://" + endpoint_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // SIGKILL now (simulates losing etcd); data directory kept.
  void Kill();
  // SIGSTOP / SIGCONT: etcd stays "up" (TCP accepts) but answers nothing.
  void Pause();
  void Resume();
  // Starts again on the same ports and data directory (after Kill).
  Status Restart();

 private:
  friend class EtcdCluster;
  EtcdProcess() = default;
  // Temp dir, binary and ports; not started yet.
  static Result<std::unique_ptr<EtcdProcess>> Prepare(const EtcdOptions& options,
                                                      const std::string& name);
  Status Spawn();
  Status WaitHealthy();
  std::string LogTail() const;

  EtcdOptions options_;
  std::string binary_;
  std::string dir_;  // temp root: data/ and etcd.log
  std::string endpoint_;
  std::string name_;
  std::string initial_cluster_;  // "name=http://127.0.0.1:peer,..."
  std::string cluster_token_;
  int client_port_ = 0;
  int peer_port_ = 0;
  int metrics_port_ = 0;
  pid_t pid_ = -1;
};

// EtcdCluster: `members` etcd processes forming one cluster (each an
// EtcdProcess above, same cleanup guarantees), for failover tests:
//   auto cluster = EtcdCluster::Start(3);
//   OpenStore((*cluster)->uri());          // etcd://m0,m1,m2
//   (*cluster)->member(0).Kill();          // the store fails over
class EtcdCluster {
 public:
  static Result<std::unique_ptr<EtcdCluster>> Start(int members, const EtcdOptions& options = {});
  int size() const { return static_cast<int>(members_.size()); }
  EtcdProcess& member(int i) { return *members_.at(static_cast<size_t>(i)); }
  // "etcd://127.0.0.1:a,127.0.0.1:b,..." in member order.
  std::string uri() const;

 private:
  std::vector<std::unique_ptr<EtcdProcess>> members_;
};

// Writes a throw-away CA and certificates for TLS tests into `dir` with the
// openssl command line: ca.pem; server.pem / server-key.pem (for IP
// 127.0.0.1 and DNS localhost); client.pem / client-key.pem; and other-ca.pem,
// a CA that signed none of them. NOT_FOUND without openssl.
Status MakeTestCertificates(const std::string& dir);

// True when an etcd binary exists (for GTEST_SKIP with a clear reason).
bool EtcdAvailable(std::string* binary_out = nullptr);

}  // namespace tandem::store::testing

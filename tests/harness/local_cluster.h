#pragma once
// LocalCluster: real tandem-engine processes ("nodes" e0, e1, ... on
// 127.0.0.1, ports chosen by the kernel) and a real tandem-controller with
// its SQLite store, in a temporary directory, for the controller's
// end-to-end tests and benchmark. Everything is killed and removed by the
// destructor.
//
// Binaries come from the environment (TANDEM_ENGINE, TANDEM_CONTROLLER) or
// the compile-time defaults the CMake target sets.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "controller/proto/registration.grpc.pb.h"
#include "csi/csi.grpc.pb.h"
#include "csi/publish_context.h"
#include "replica-engine/proto/engine.pb.h"
#include "tests/harness/process.h"

namespace tandem::controller::testing {

struct EngineNode {
  std::string name;  // node id
  std::string dir;
  std::unique_ptr<Process> process;
  uint16_t data_port = 0;
  uint16_t grpc_port = 0;
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port); }
  std::string data_address() const { return "127.0.0.1:" + std::to_string(data_port); }
};

class LocalCluster {
 public:
  LocalCluster();
  ~LocalCluster();

  // Starts `n` engines e0..e<n-1> (waits for their port files).
  Status StartEngines(int n);
  // Starts (or restarts) an engine with its previous ports.
  Status StartEngine(EngineNode* e);
  // Starts tandem-controller on <root>/csi.sock with its store in
  // <root>/controller, and waits until Probe says ready.
  Status StartController(const std::vector<std::string>& extra_flags = {});
  // Controllers started from now on use etcd at `endpoints` (HOST:PORT)
  // instead of SQLite in <root>/controller.
  void UseEtcd(const std::string& endpoints) { store_flag_ = "--etcd-endpoints=" + endpoints; }
  // SIGKILL (no cleanup at all), as after a crash.
  void KillController();
  // Registers every engine with the controller; zone "z<i>" for e<i>.
  Status RegisterEngines();

  const std::string& root() const { return root_; }
  std::string csi_endpoint() const { return "unix://" + root_ + "/csi.sock"; }
  std::vector<EngineNode>& engines() { return engines_; }
  Process& controller() { return *controller_; }

  // Fresh stubs over the controller's unix socket.
  std::unique_ptr<::csi::v1::Identity::Stub> Identity();
  std::unique_ptr<::csi::v1::Controller::Stub> Controller();
  std::unique_ptr<::tandem::controller::v1::Registration::Stub> Registration();

  // Starts another controller process on the same store (leader election
  // tests), serving on `socket_path`, logging to <root>/<log_name>, with
  // `extra_flags` instead of the main controller's.
  Status StartSecondController(Process* process, const std::string& socket_path,
                               const std::string& log_name = "controller2.log",
                               const std::vector<std::string>& extra_flags = {});

 private:
  std::vector<std::string> ControllerArgv(const std::string& socket_path,
                                          const std::vector<std::string>& extra) const;

  std::string root_;
  std::string engine_bin_;
  std::string controller_bin_;
  std::vector<EngineNode> engines_;
  std::unique_ptr<Process> controller_;
  std::vector<std::string> controller_extra_;
  std::string store_flag_;
};

// The CreateTarget request a node builds from a ControllerPublish answer (as
// tandem-node does): volume, epoch, size, secret, the replicas (the one at
// `local_data_address` marked local; "" marks none) and the in-sync record
// when one was given. Callers add timeouts and the export kind.
engine::v1::CreateTargetRequest TargetRequestFor(const std::string& volume_id,
                                                 const ::tandem::csi::PublishContext& ctx,
                                                 const std::string& local_data_address);

}  // namespace tandem::controller::testing

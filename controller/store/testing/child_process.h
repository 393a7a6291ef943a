#pragma once
// ChildProcess: runs a helper binary with its stdout on a pipe, so a test can
// wait for a line it prints ("LEADER", "ACK 41") and SIGKILL it at a chosen
// moment. Every wait is bounded. The child gets PR_SET_PDEATHSIG=SIGKILL (it
// dies when the thread that spawned it exits: spawn from the test's main
// thread), and the destructor kills and reaps it, so none outlives its test.

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::store::testing {

class ChildProcess {
 public:
  // argv[0] is the binary's path.
  static Result<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The next stdout line (without '\n'), or std::nullopt on EOF or when
  // `timeout` passes first.
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout);
  // SIGKILL and reap (idempotent).
  void Kill();
  pid_t pid() const { return pid_; }

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
};

}  // namespace tandem::store::testing

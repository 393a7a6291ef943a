#pragma once
// Process: a child process for the controller's end-to-end tests (real
// tandem-engine and tandem-controller binaries), with stdout and stderr
// appended to a log file. The destructor kills (SIGKILL) and reaps a child
// that is still running, so a failing test leaves nothing behind.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::controller::testing {

class Process {
 public:
  Process() = default;
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // fork + execv(argv[0], argv); output appended to `log_path`.
  Status Start(const std::vector<std::string>& argv, const std::string& log_path);
  // Sends `sig` (no-op if not running).
  void Signal(int sig);
  // Waits up to `timeout` for the child to exit; true if it did (and reaped).
  // `status`, when given, gets waitpid's status.
  bool Wait(std::chrono::milliseconds timeout, int* status = nullptr);
  // SIGKILL and reap.
  void Kill();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Polls `cond` every 20 ms until it is true or `timeout` passes.
template <typename Cond>
bool WaitFor(Cond cond, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  return true;
}

// The file's contents without a trailing newline; "" if unreadable.
std::string ReadSmallFile(const std::string& path);

}  // namespace tandem::controller::testing

#include "tests/harness/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace tandem::controller::testing {

Process::~Process() { Kill(); }

Status Process::Start(const std::vector<std::string>& argv, const std::string& log_path) {
  if (pid_ > 0) return Status::FailedPrecondition("process already running");
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return PosixError("open " + log_path, errno);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(log);
    return PosixError("fork", err);
  }
  if (pid == 0) {
    dup2(log, 1);
    dup2(log, 2);
    // The test runner may block signals in its threads; the child must not
    // inherit that (SIGTERM must reach the daemons).
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log);
  pid_ = pid;
  return Status::Ok();
}

void Process::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

bool Process::Wait(std::chrono::milliseconds timeout, int* status) {
  if (pid_ <= 0) return true;
  bool done = WaitFor(
      [&] {
        int st = 0;
        pid_t r = waitpid(pid_, &st, WNOHANG);
        if (r == pid_ && status != nullptr) *status = st;
        return r == pid_ || (r < 0 && errno == ECHILD);
      },
      timeout);
  if (done) pid_ = -1;
  return done;
}

void Process::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGCONT);
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace tandem::controller::testing

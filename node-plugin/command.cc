#include "node-plugin/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "common/unique_fd.h"

extern char** environ;

namespace tandem::node {
namespace {

constexpr size_t kMaxOutput = 64 * 1024;

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

int ExitCode(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 255;
}

}  // namespace

Result<CommandOutput> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  if (argv.empty()) return Status::InvalidArgument("RunCommand: empty argv");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return PosixError("pipe2", errno);
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    if (rc == ENOENT)
      return Status::NotFound(argv[0] + std::string(" is not installed (not in PATH)"));
    return PosixError("spawn " + argv[0], rc);
  }
  write_end.Reset();  // so read_end sees EOF when the child (and its children) exit

  CommandOutput out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{read_end.get(), POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;  // timeout is checked at the top
    char buf[4096];
    ssize_t got = read(read_end.get(), buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child closed its output
    if (out.output.size() < kMaxOutput) {
      out.output.append(buf,
                        std::min<size_t>(static_cast<size_t>(got), kMaxOutput - out.output.size()));
    }
  }
  if (timed_out) kill(pid, SIGKILL);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return Status::DeadlineExceeded(Joined(argv) + " did not finish within " +
                                    std::to_string(timeout.count()) + " ms (killed)");
  }
  out.exit_code = ExitCode(wstatus);
  return out;
}

Status RunChecked(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  TANDEM_ASSIGN_OR_RETURN(CommandOutput out, RunCommand(argv, timeout));
  if (out.exit_code == 0) return Status::Ok();
  std::string text = out.output;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return Status::Internal(Joined(argv) + " failed (exit " + std::to_string(out.exit_code) +
                          "): " + text);
}

}  // namespace tandem::node

#include "vmm/bench/child_process.hpp"

#include "vmm/kvm/unique_fd.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace hv {

namespace {

[[noreturn]] void fail(const std::string& what, int err) { throw VmmError(what + ": " + std::strerror(err)); }

// Owns posix_spawn's file-action list.
class SpawnActions {
public:
    SpawnActions() {
        if (const int e = posix_spawn_file_actions_init(&a_)) fail("posix_spawn_file_actions_init", e);
    }
    ~SpawnActions() { posix_spawn_file_actions_destroy(&a_); }
    SpawnActions(const SpawnActions&) = delete;
    SpawnActions& operator=(const SpawnActions&) = delete;
    posix_spawn_file_actions_t* get() { return &a_; }

private:
    posix_spawn_file_actions_t a_;
};

} // namespace

ChildResult run_child(std::span<const std::string> argv) {
    if (argv.empty()) throw VmmError("run_child: expected a program and its arguments, got nothing");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) fail("pipe2", errno);
    UniqueFd read_end(fds[0]), write_end(fds[1]);

    SpawnActions actions;
    // The child's stdout and stderr become the pipe (dup2 clears CLOEXEC on
    // the copies); stdin is /dev/null so that it never waits for us.
    if (const int e = posix_spawn_file_actions_addopen(actions.get(), STDIN_FILENO, "/dev/null", O_RDONLY, 0))
        fail("posix_spawn_file_actions_addopen", e);
    for (const int target : {STDOUT_FILENO, STDERR_FILENO})
        if (const int e = posix_spawn_file_actions_adddup2(actions.get(), write_end.get(), target))
            fail("posix_spawn_file_actions_adddup2", e);

    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    if (const int e = posix_spawn(&pid, args[0], actions.get(), nullptr, args.data(), environ))
        fail("cannot start " + argv[0], e);
    write_end.reset(); // the read below ends when the child's copies close

    ChildResult r;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(read_end.get(), buf, sizeof buf);
        if (n > 0) {
            r.output.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) fail("waitpid for " + argv[0], errno);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

} // namespace hv

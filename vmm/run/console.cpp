#include "vmm/run/console.hpp"

#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace hv {
namespace {

// What the signal handlers and atexit need to undo raw mode. One terminal
// at a time: `vmm run` has one console.
std::atomic<bool> g_raw_active{false};
int g_raw_fd = -1;
termios g_raw_saved{};

void restore_terminal() {
    if (g_raw_active.exchange(false)) tcsetattr(g_raw_fd, TCSANOW, &g_raw_saved);
}

// The dispositions found when raw mode was first set, per signal: the
// handler restores the terminal and then hands the signal on to them, so a
// sanitizer's or test framework's handler still runs, and a default action
// still ends the process.
struct sigaction g_previous[NSIG];

extern "C" void restore_and_pass_on(int sig, siginfo_t* info, void* context) {
    restore_terminal(); // tcsetattr is async-signal-safe
    const struct sigaction previous = g_previous[sig];
    sigaction(sig, &previous, nullptr);
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, context);
    } else if (previous.sa_handler == SIG_DFL) {
        raise(sig); // blocked while this handler runs: delivered, with the default action, on return
    } else if (previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
    }
}

void install_restore_handlers() {
    static bool atexit_registered = false;
    if (!atexit_registered) std::atexit(restore_terminal);
    atexit_registered = true;
    // Signals whose default action ends the process; SIGINT and SIGQUIT still
    // arrive with `kill`, even though raw mode stops the keyboard making them.
    for (int sig : {SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) {
        struct sigaction current{};
        sigaction(sig, nullptr, &current);
        if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == restore_and_pass_on) continue;
        g_previous[sig] = current;
        struct sigaction sa{};
        sa.sa_sigaction = restore_and_pass_on;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_SIGINFO;
        sigaction(sig, &sa, nullptr);
    }
}

// Writes all of `data` to `fd` (waiting while a non-blocking one is full);
// 0, or the errno of the failed write.
int write_all(int fd, const std::uint8_t* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd p{fd, POLLOUT, 0};
            ::poll(&p, 1, -1);
            continue;
        }
        if (n < 0) return errno;
        if (n == 0) return EIO;
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return 0;
}

} // namespace

TerminalRawMode::TerminalRawMode(int fd) {
    termios t{};
    if (!isatty(fd) || tcgetattr(fd, &t) != 0) return;
    saved_ = t;
    g_raw_fd = fd;
    g_raw_saved = t;
    install_restore_handlers();
    // Input: bytes as typed, no signals, no echo (the guest echoes). Output
    // processing stays on so the VMM's own messages still start at column 0.
    t.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    g_raw_active.store(true);
    if (tcsetattr(fd, TCSANOW, &t) != 0) {
        g_raw_active.store(false);
        saved_.reset();
    }
}

TerminalRawMode::~TerminalRawMode() {
    if (saved_) restore_terminal();
}

bool ConsoleEscape::feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out) {
    for (std::uint8_t b : in) {
        if (after_prefix_) {
            after_prefix_ = false;
            if (b == 'x' || b == 'X') return true;
            // Ctrl-A Ctrl-A sends one Ctrl-A; Ctrl-A and anything else sends both.
            out.push_back(kPrefix);
            if (b != kPrefix) out.push_back(b);
        } else if (b == kPrefix) {
            after_prefix_ = true;
        } else {
            out.push_back(b);
        }
    }
    return false;
}

Console::Console(int input_fd, Serial16550& serial, std::function<void()> on_quit, int flush_interval_ms,
                 bool wait_for_driver)
    : input_fd_(input_fd), serial_(serial), on_quit_(std::move(on_quit)), flush_interval_ms_(flush_interval_ms),
      wait_for_driver_(wait_for_driver),
      raw_(input_fd), wake_(::eventfd(0, EFD_CLOEXEC)) {
    if (!wake_.valid()) throw VmmError(std::string("cannot create the console's eventfd: ") + std::strerror(errno));
    thread_ = std::thread([this] { run_guarded(); });
}

void Console::run_guarded() {
    try {
        run();
    } catch (const std::exception& e) {
        // A failed KVM_IRQ_LINE, say: the guest stops getting input, the VM runs on.
        std::fprintf(stderr, "vmm: console input stopped: %s\n", e.what());
    }
}

Console::~Console() {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
    thread_.join();
    serial_.flush();
}

void Console::run() {
    bool input_open = input_fd_ >= 0;
    bool quit = false;
    std::uint8_t buf[256];
    for (;;) {
        pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {input_fd_, POLLIN, 0}};
        // Hold back host input while the UART's FIFO is full: poll only the
        // wake-up fd then, and retry at the next tick.
        const nfds_t n = (input_open && pending_.empty() && !quit) ? 2 : 1;
        const int r = ::poll(fds, n, flush_interval_ms_);
        if (r < 0 && errno != EINTR) break;
        if (r > 0 && (fds[0].revents & POLLIN)) break;
        if (r > 0 && n == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            const ssize_t got = ::read(input_fd_, buf, sizeof buf);
            if (got > 0) {
                received_.fetch_add(static_cast<std::uint64_t>(got));
                if (escape_.feed(std::span(buf, static_cast<std::size_t>(got)), pending_)) {
                    quit = true;
                    on_quit_();
                }
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                input_open = false; // end of input: the guest just sees no more bytes
            }
        }
        if (!pending_.empty() && (!wait_for_driver_ || serial_.rx_interrupt_enabled())) {
            const std::size_t take = std::min(serial_.rx_free(), pending_.size());
            serial_.receive(std::span(pending_.data(), take));
            pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(take));
        }
        serial_.flush();
    }
}

ConsoleOutput::ConsoleOutput(const std::optional<std::string>& serial_file)
    : owned_(serial_file ? open_output_file(*serial_file, "--serial") : UniqueFd()),
      dest_(serial_file ? owned_.get() : STDOUT_FILENO),
      dest_name_(serial_file ? "--serial '" + *serial_file + "'" : "stdout") {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        throw VmmError(std::string("cannot create the pipe for the guest's serial output: ") + std::strerror(errno));
    read_ = UniqueFd(fds[0]);
    write_ = UniqueFd(fds[1]);
    if (!serial_file) std::fflush(stdout);
    thread_ = std::thread([this] { copy(); });
}

ConsoleOutput::~ConsoleOutput() { stop(); }

std::string ConsoleOutput::vm_path() const { return "/proc/self/fd/" + std::to_string(write_.get()); }

void ConsoleOutput::copy() {
    std::uint8_t buf[4096];
    for (;;) {
        const ssize_t n = ::read(read_.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return; // every writer closed its end
        if (error_ == 0) error_ = write_all(dest_, buf, static_cast<std::size_t>(n));
    }
}

void ConsoleOutput::stop() {
    write_.reset();
    if (thread_.joinable()) thread_.join();
}

void ConsoleOutput::finish() {
    stop();
    if (error_ != 0)
        throw VmmError("cannot write the guest's serial output to " + dest_name_ + ": " + std::strerror(error_) +
                       " (expected every byte written; the output from there on is lost)");
}

} // namespace hv

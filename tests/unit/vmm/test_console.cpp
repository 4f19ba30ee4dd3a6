// hv::ConsoleEscape, TerminalRawMode and Console: host input reaching the
// guest's UART, the Ctrl-A x escape, and the terminal settings coming back.
#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <sys/wait.h>
#include <chrono>
#include <cstdint>
#include <fcntl.h>
#include <mutex>
#include <pty.h>
#include <string>
#include <termios.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "devices/serial16550.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/kvm/unique_fd.hpp"
#include "vmm/run/console.hpp"

using hv::test::bytes_of;

namespace {

std::string feed(hv::ConsoleEscape& e, const std::string& in, bool* quit = nullptr) {
    std::vector<std::uint8_t> out;
    const auto b = bytes_of(in);
    const bool q = e.feed(b, out);
    if (quit) *quit = q;
    return {out.begin(), out.end()};
}

// The guest side of the UART: LSR bit 0 says a byte is waiting in RBR.
std::string drain_uart(hv::Serial16550& uart, std::size_t want, std::chrono::milliseconds limit) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
        std::uint8_t lsr = 0;
        uart.read(5, std::span(&lsr, 1));
        if (lsr & 1) {
            std::uint8_t b = 0;
            uart.read(0, std::span(&b, 1));
            got += static_cast<char>(b);
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    return got;
}

} // namespace

TEST_CASE("ConsoleEscape: plain bytes pass, Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A") {
    hv::ConsoleEscape e;
    bool quit = true;
    CHECK(feed(e, "ls -l\r", &quit) == "ls -l\r");
    CHECK(!quit);
    CHECK(feed(e, "\x01\x01", &quit) == "\x01");
    CHECK(!quit);
    CHECK(feed(e, "a\x01" "b", &quit) == "a\x01" "b"); // Ctrl-A and another key: both go through
    CHECK(!quit);
    CHECK(feed(e, "q\x01", &quit) == "q"); // the prefix waits for the next byte...
    CHECK(!quit);
    CHECK(feed(e, "x", &quit).empty()); // ...which may come in the next read
    CHECK(quit);
}

TEST_CASE("TerminalRawMode: nothing happens on a pipe") {
    int p[2];
    REQUIRE(pipe(p) == 0);
    hv::UniqueFd r(p[0]), w(p[1]);
    hv::TerminalRawMode raw(r.get());
    CHECK(!raw.active());
}

TEST_CASE("TerminalRawMode: raw while it lives, the saved settings after") {
    int master = -1, slave = -1;
    if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
        MESSAGE("skipped: no pseudo-terminal available");
        return;
    }
    hv::UniqueFd m(master), s(slave);
    termios before{};
    REQUIRE(tcgetattr(s.get(), &before) == 0);
    REQUIRE((before.c_lflag & ICANON) != 0);
    {
        hv::TerminalRawMode raw(s.get());
        CHECK(raw.active());
        termios during{};
        REQUIRE(tcgetattr(s.get(), &during) == 0);
        CHECK((during.c_lflag & (ICANON | ECHO | ISIG)) == 0);
        CHECK((during.c_iflag & (ICRNL | IXON)) == 0);
        CHECK(during.c_cc[VMIN] == 1);
    }
    termios after{};
    REQUIRE(tcgetattr(s.get(), &after) == 0);
    CHECK(after.c_lflag == before.c_lflag);
    CHECK(after.c_iflag == before.c_iflag);
    CHECK(after.c_oflag == before.c_oflag);
}

TEST_CASE("Console: input waits until the guest enables the receive interrupt") {
    hv::Serial16550 uart([](std::span<const std::uint8_t>) {});
    int p[2];
    REQUIRE(pipe(p) == 0);
    hv::UniqueFd r(p[0]), w(p[1]);
    hv::Console console(r.get(), uart, [] {}, 2);
    REQUIRE(write(w.get(), "ab", 2) == 2);
    // No driver yet: a probe or FIFO reset would lose the bytes, so none arrive.
    CHECK(drain_uart(uart, 1, std::chrono::milliseconds(60)).empty());
    const std::uint8_t rx_interrupt = 0x01;
    uart.write(1, std::span(&rx_interrupt, 1)); // IER
    CHECK(drain_uart(uart, 2, std::chrono::seconds(5)) == "ab");
}

TEST_CASE("Console: input reaches the UART in order, held back while its 1-byte holding register is full") {
    std::string out;
    hv::Serial16550 uart([&out](std::span<const std::uint8_t> b) { out.append(b.begin(), b.end()); });
    int p[2];
    REQUIRE(pipe(p) == 0);
    hv::UniqueFd r(p[0]), w(p[1]);
    std::atomic<int> quits{0};
    {
        hv::Console console(r.get(), uart, [&] { ++quits; }, 5, /*wait_for_driver=*/false);
        CHECK(!console.raw_mode());
        const std::string line = "echo 0123456789abcdefghijklmnopqrstuvwxyz\n"; // longer than the 16-byte FIFO
        REQUIRE(write(w.get(), line.data(), line.size()) == static_cast<ssize_t>(line.size()));
        CHECK(drain_uart(uart, line.size(), std::chrono::seconds(5)) == line);
        const std::string quit = "\x01x";
        REQUIRE(write(w.get(), quit.data(), quit.size()) == 2);
        for (int i = 0; i < 500 && quits.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        CHECK(quits.load() == 1);
        CHECK(console.bytes_received() == line.size() + 2);
    }
    CHECK(drain_uart(uart, 1, std::chrono::milliseconds(20)).empty()); // the escape never reached the guest
}

TEST_CASE("Console: a partial line the guest transmits is flushed without waiting for its newline") {
    std::string out;
    std::mutex out_mutex;
    hv::Serial16550 uart([&](std::span<const std::uint8_t> b) {
        std::lock_guard lock(out_mutex);
        out.append(b.begin(), b.end());
    });
    int p[2];
    REQUIRE(pipe(p) == 0);
    hv::UniqueFd r(p[0]), w(p[1]);
    hv::Console console(r.get(), uart, [] {}, 5);
    const std::uint8_t prompt[] = {'#', ' '};
    for (std::uint8_t b : prompt) uart.write(0, std::span(&b, 1));
    bool seen = false;
    for (int i = 0; i < 500 && !seen; ++i) {
        {
            std::lock_guard lock(out_mutex);
            seen = out == "# ";
        }
        if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(seen);
}

namespace {

// Runs `leave` in a child that holds raw mode on the pty's slave side, then
// returns the slave's settings as the parent sees them after the child ended.
// With `default_sigterm` the child first gives SIGTERM its default action
// (the test framework installs a handler of its own).
template <class Leave>
std::optional<termios> settings_after_child(Leave leave, int* child_status, bool default_sigterm = false) {
    int master = -1, slave = -1;
    if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) return std::nullopt;
    hv::UniqueFd m(master), s(slave);
    const pid_t pid = fork();
    if (pid == 0) {
        if (default_sigterm) signal(SIGTERM, SIG_DFL);
        // Heap-allocated and never destroyed: only the exit path under test may restore.
        new hv::TerminalRawMode(s.get());
        leave();
        _exit(99); // not reached
    }
    waitpid(pid, child_status, 0);
    termios after{};
    if (tcgetattr(s.get(), &after) != 0) return std::nullopt;
    return after;
}

} // namespace

TEST_CASE("TerminalRawMode: exit() and a fatal signal also restore the terminal") {
    int master = -1, slave = -1;
    if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
        MESSAGE("skipped: no pseudo-terminal available");
        return;
    }
    close(master);
    close(slave);
    int status = 0;
    const auto after_exit = settings_after_child([] { std::exit(3); }, &status);
    REQUIRE(after_exit);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 3);
    CHECK((after_exit->c_lflag & ICANON) != 0);
    CHECK((after_exit->c_lflag & ECHO) != 0);

    // The default action must still end the process once the terminal is back.
    const auto after_signal = settings_after_child([] { raise(SIGTERM); }, &status, true);
    REQUIRE(after_signal);
    CHECK(WIFSIGNALED(status)); // the handler restored, then let SIGTERM end the process
    CHECK(WTERMSIG(status) == SIGTERM);
    CHECK((after_signal->c_lflag & ICANON) != 0);
    CHECK((after_signal->c_iflag & ICRNL) != 0);
}

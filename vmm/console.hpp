#pragma once
// The interactive side of the guest's serial console: host stdin goes to
// the UART's receive FIFO (so the guest sees interrupts and can run a
// shell), and when stdin is a terminal it is put in raw mode for the run, so
// keys such as Ctrl-C reach the guest. Ctrl-A x ends the VM; Ctrl-A Ctrl-A
// sends one Ctrl-A. The terminal's settings come back on every way out:
// the destructor, exit(), and fatal signals (the handler restores them and
// re-raises).
#include "serial16550.hpp"
#include "unique_fd.hpp"

#include <atomic>
#include <functional>
#include <optional>
#include <termios.h>
#include <thread>
#include <vector>

namespace hv {

// Raw mode on a terminal for as long as the object lives.
class TerminalRawMode {
public:
    // Does nothing (active() false) when `fd` is not a terminal.
    explicit TerminalRawMode(int fd);
    ~TerminalRawMode();
    TerminalRawMode(const TerminalRawMode&) = delete;
    TerminalRawMode& operator=(const TerminalRawMode&) = delete;
    bool active() const { return saved_.has_value(); }

private:
    std::optional<termios> saved_; // the settings to restore (the fd is kept for the signal handlers)
};

// Splits console input into bytes for the guest and the quit request.
class ConsoleEscape {
public:
    static constexpr std::uint8_t kPrefix = 0x01; // Ctrl-A
    // Appends the bytes meant for the guest to `out`; true when the user typed Ctrl-A x.
    bool feed(std::span<const std::uint8_t> in, std::vector<std::uint8_t>& out);

private:
    bool after_prefix_ = false;
};

class Console {
public:
    // `flush_interval_ms`: how often partial lines (a shell prompt) are handed
    // to the output; the UART buffers up to a newline. `wait_for_driver`:
    // hold input back until the guest enables the receive interrupt, so what
    // is typed (or piped) during boot is not lost while its driver probes
    // and resets the UART.
    Console(int input_fd, Serial16550& serial, std::function<void()> on_quit, int flush_interval_ms = 20,
            bool wait_for_driver = true);
    ~Console(); // stops the reader thread, then restores the terminal
    Console(const Console&) = delete;
    Console& operator=(const Console&) = delete;
    bool raw_mode() const { return raw_.active(); }
    std::uint64_t bytes_received() const { return received_.load(); }

private:
    void run();
    void run_guarded();

    int input_fd_;
    Serial16550& serial_;
    std::function<void()> on_quit_;
    int flush_interval_ms_;
    bool wait_for_driver_;
    TerminalRawMode raw_;
    UniqueFd wake_; // eventfd: the destructor wakes the reader
    ConsoleEscape escape_;
    std::vector<std::uint8_t> pending_; // read from the host, not yet taken by the UART
    std::atomic<std::uint64_t> received_{0};
    std::thread thread_;
};

} // namespace hv

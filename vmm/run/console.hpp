#pragma once
// The interactive side of the guest's serial console: host stdin goes to
// the UART's receive FIFO (so the guest sees interrupts and can run a
// shell), and when stdin is a terminal it is put in raw mode for the run, so
// keys such as Ctrl-C reach the guest. Ctrl-A x ends the VM; Ctrl-A Ctrl-A
// sends one Ctrl-A. The terminal's settings come back on every way out:
// the destructor, exit(), and fatal signals (the handler restores them and
// re-raises). The output side (ConsoleOutput) takes the guest's bytes to
// --serial FILE or stdout and reports a failed write.
#include "devices/serial16550.hpp"
#include "vmm/kvm/unique_fd.hpp"

#include <atomic>
#include <functional>
#include <optional>
#include <string>
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

// Where the guest's serial output goes: --serial FILE, else stdout. The VM
// writes it into a pipe; a thread copies it to the destination and keeps the
// first write error, so output lost to a full disk or /dev/full fails the run
// (finish) instead of vanishing. What follows a failed write is discarded.
class ConsoleOutput {
public:
    // `serial_file`: opened by open_output_file's rules (a FIFO without a
    // reader is refused, never waited on); nullopt: stdout, flushed first so
    // the guest's bytes follow what was printed there before.
    explicit ConsoleOutput(const std::optional<std::string>& serial_file);
    ~ConsoleOutput(); // closes the pipe's write end and waits for the copy
    ConsoleOutput(const ConsoleOutput&) = delete;
    ConsoleOutput& operator=(const ConsoleOutput&) = delete;

    // The path the VM opens for writing: the pipe's write end, through /proc/self/fd.
    std::string vm_path() const;
    // Once the VM has closed what it opened: waits until every byte was
    // copied; throws VmmError naming the destination when a write failed.
    void finish();

private:
    void copy();
    void stop();

    UniqueFd owned_;        // --serial FILE
    int dest_;              // owned_, or STDOUT_FILENO
    std::string dest_name_; // "--serial 'FILE'" or "stdout"
    UniqueFd read_, write_; // the pipe
    int error_ = 0;         // errno of the first failed write: set by the thread, read after it ended
    std::thread thread_;
};

} // namespace hv

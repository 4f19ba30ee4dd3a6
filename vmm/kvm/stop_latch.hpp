#pragma once
// The first reason to end the VM wins; everyone else can wait for it.
// vCPU threads, devices (debug-exit) and the timeout all report here.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

namespace hv {

enum class StopReason { None, DebugExit, AllHalted, GuestCrash, Timeout, VmmFailure, GuestShutdown, ConsoleQuit };
const char* to_string(StopReason reason);

struct StopState {
    StopReason reason = StopReason::None;
    int status = 0;
    std::string message;
};

class StopLatch {
public:
    // Returns true when this call was the one that stopped the VM.
    bool request(StopReason reason, int status, std::string message = {});
    bool stopped() const;
    StopState state() const;
    // Waits until stopped or the deadline passes; returns stopped().
    bool wait_until(std::chrono::steady_clock::time_point deadline) const;
    void wait() const;

private:
    mutable std::mutex mutex_;
    mutable std::condition_variable cv_;
    StopState state_;
};

// Guest debug-exit value -> `vmm run` exit status (see README): values up to
// exit_status::kMaxGuestStatus map to themselves, larger ones clamp to it.
int debug_exit_status(std::uint32_t value);

} // namespace hv

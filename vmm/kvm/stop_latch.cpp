#include "vmm/kvm/stop_latch.hpp"

#include "vmm/kvm/vmm_error.hpp"

namespace hv {

const char* to_string(StopReason reason) {
    switch (reason) {
    case StopReason::None: return "running";
    case StopReason::DebugExit: return "debug-exit";
    case StopReason::AllHalted: return "all vCPUs halted";
    case StopReason::GuestCrash: return "guest crash";
    case StopReason::Timeout: return "timeout";
    case StopReason::VmmFailure: return "VMM failure";
    case StopReason::GuestShutdown: return "guest shutdown";
    case StopReason::ConsoleQuit: return "console quit";
    }
    return "?";
}

bool StopLatch::request(StopReason reason, int status, std::string message) {
    std::lock_guard lock(mutex_);
    if (state_.reason != StopReason::None) return false;
    state_ = StopState{reason, status, std::move(message)};
    cv_.notify_all();
    return true;
}

bool StopLatch::stopped() const {
    std::lock_guard lock(mutex_);
    return state_.reason != StopReason::None;
}

StopState StopLatch::state() const {
    std::lock_guard lock(mutex_);
    return state_;
}

bool StopLatch::wait_until(std::chrono::steady_clock::time_point deadline) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_until(lock, deadline, [&] { return state_.reason != StopReason::None; });
}

void StopLatch::wait() const {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return state_.reason != StopReason::None; });
}

int debug_exit_status(std::uint32_t value) {
    return value > static_cast<std::uint32_t>(exit_status::kMaxGuestStatus) ? exit_status::kMaxGuestStatus
                                                                           : static_cast<int>(value);
}

} // namespace hv

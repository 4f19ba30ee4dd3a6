#pragma once
// Errors the VMM reports to the user as one line, and the exit statuses of
// `vmm run`. Guest debug-exit values 0..kMaxGuestStatus map to themselves;
// the codes above that belong to the VMM (documented in README.md).
#include <stdexcept>
#include <string>

namespace hv {

// A failure caused by the user's input or the host (bad image, KVM missing,
// absurd sizes). main() prints what() on one line and exits with kVmmError.
class VmmError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace exit_status {
inline constexpr int kMaxGuestStatus = 123; // larger debug-exit values clamp to this
inline constexpr int kTimeout = 124;        // --timeout expired
inline constexpr int kVmmError = 125;       // usage error, bad image, KVM missing, host failure
inline constexpr int kGuestCrash = 126;     // triple fault, failed entry, unhandled exception, ...
} // namespace exit_status

} // namespace hv

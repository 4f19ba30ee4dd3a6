#pragma once
// The hypercall port (HV_HYPERCALL_PORT): the guest writes the guest-physical
// address of a request block (guest/include/hv/abi.h); the block is read and
// answered through GuestMemory's bounds-checked accessors only.
#include "vmm/kvm/guest_memory.hpp"

#include <hv/abi.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hv {

struct HypercallResult {
    std::uint32_t status = HV_OK;                // returned to the guest in EAX
    std::optional<hv_call_exception> exception;  // an HV_CALL_EXCEPTION report, or the context of a fatal fault
    std::string fatal;                           // non-empty: stop the VM with this reason (--strict-faults)
};

class ShadowPager;

// Who is calling and what serves the shadow-paging calls (none in identity
// mode: those calls answer HV_E_NOT_SHADOW).
struct HypercallContext {
    std::uint32_t vcpu = 0;
    ShadowPager* pager = nullptr;
    bool strict_faults = false; // a page fault the pager cannot resolve stops the VM
};

// Every argument is checked before anything acts on it: the block must lie
// in guest RAM and have the call's size, reserved fields must be 0,
// addresses must be below 2^47 (the lower canonical half the MMU covers),
// op codes and error-code bits must be known.
HypercallResult handle_hypercall(GuestMemory& memory, std::uint64_t block_gpa, const HypercallContext& context = {});

// Lines a guest can make the VMM print as often as it likes (its exception
// reports, the results of its coherence checks): a hostile guest must not
// fill the VMM's stderr (200000 exception reports once wrote 18 MB). The
// first `listed` lines of each kind are printed, the rest only counted, and
// finish() prints "... and N more KIND (suppressed)" for each kind that had
// more, as the unclaimed-access list of --stats does. Thread-safe; the sink
// is called outside the lock. The destructor calls finish().
class GuestLog {
public:
    using Sink = std::function<void(std::string_view)>;
    static constexpr std::uint64_t kListed = 8;

    explicit GuestLog(Sink sink, std::uint64_t listed = kListed) : sink_(std::move(sink)), listed_(listed) {}
    ~GuestLog();
    GuestLog(const GuestLog&) = delete;
    GuestLog& operator=(const GuestLog&) = delete;

    // Counts one line of `kind` (a plural noun: "guest exception reports");
    // true when it is among the first `listed` of its kind and is to be printed.
    bool admit(std::string_view kind);
    // admit(), then the line to the sink when admitted.
    void print(std::string_view kind, std::string_view line);
    // print() for a line that costs something to make: `make` runs only when
    // the line is admitted (a verify can find a million lost writes).
    template <class Make>
    void print_with(std::string_view kind, Make&& make) {
        if (admit(kind) && sink_) sink_(make());
    }
    // One "... and N more KIND (suppressed)" line per kind with lines not
    // printed since the last finish().
    void finish();
    std::uint64_t suppressed(std::string_view kind) const; // not printed so far

private:
    struct Kind {
        std::string name;
        std::uint64_t seen = 0, summarized = 0; // summarized: suppressed lines finish() already counted
    };
    Kind& kind_locked(std::string_view name);

    Sink sink_;
    std::uint64_t listed_;
    mutable std::mutex mutex_;
    std::vector<Kind> kinds_; // a handful: kinds are constants in the code
};

const char* exception_mnemonic(std::uint64_t vector); // "#PF", "#GP", ... or "#?"
std::string describe_exception(const hv_call_exception& e);

} // namespace hv

#pragma once
// The MMU-notifier interface: how the primary MMU (HostAddressSpace) tells
// secondary MMUs (ShadowMmu, an external TLB) that host mappings change.
//
// Protocol for every host operation that changes or drops a mapping:
//   invalidate_range_start(range, event, blockable)   before the host PTEs change
//   ... host page-table entries change under their split PT locks ...
//   invalidate_range_end(range, event)                 after they changed
// A secondary MMU must not install a translation for any page of `range`
// from the start until the matching end (it may retry). The 2008 shape,
// invalidate_page(address, event), is fired after the change of one page
// when the host runs in page-at-a-time mode (HostAddressSpace option).
// Aging calls clear_young / test_young on a range without start/end.
// release() is called once when the address space goes away.
#include <cstdint>

namespace hv::mmu {

// A half-open range of host addresses [start, end), 4 KiB aligned.
struct HostRange {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    std::uint64_t pages() const { return (end - start) >> 12; }
    bool overlaps(const HostRange& o) const { return start < o.end && o.start < end; }
    bool operator==(const HostRange&) const = default;
};

enum class InvalidateEvent { Unmap, Protect, Migrate, Merge, SwapOut, Clear };
const char* to_string(InvalidateEvent e);

enum class StartResult { Ok, TryAgain }; // TryAgain only when !blockable

class MmuNotifier {
public:
    virtual ~MmuNotifier() = default;
    virtual StartResult invalidate_range_start(HostRange range, InvalidateEvent event, bool blockable) = 0;
    // Must not throw: the host has already changed its tables, so there is
    // nothing to undo, and the chain ends ranges from destructors and other
    // noexcept paths (a throw would terminate the process).
    virtual void invalidate_range_end(HostRange range, InvalidateEvent event) noexcept = 0;
    virtual void invalidate_page(std::uint64_t host_address, InvalidateEvent event) = 0;
    // Clear / test the accessed state the secondary MMU holds for the range;
    // true when any page was young.
    virtual bool clear_young(HostRange range) = 0;
    virtual bool test_young(HostRange range) = 0;
    virtual void release() = 0;
};

} // namespace hv::mmu

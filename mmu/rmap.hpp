#pragma once
// The reverse map: for every 4 KiB frame, the guest pages whose secondary
// entries map it. A frame is usually mapped once, so the head word holds
// one guest frame number inline (tagged with bit 0); a second mapping turns
// it into a pointer to a chain of descriptors of kRmapDescEntries each
// (KVM uses 14; we use the same until the bench says otherwise).
// Each frame's list has its own lock (a PtLock per frame), so faults on
// different frames never share a lock here whatever the shadow lock policy.
#include "frame_space.hpp"
#include "pt_lock.hpp"

#include <cstdint>
#include <memory>
#include <vector>

namespace hv::mmu {

inline constexpr unsigned kRmapDescEntries = 14;

class Rmap {
public:
    explicit Rmap(Pfn frames);
    ~Rmap();
    Rmap(const Rmap&) = delete;
    Rmap& operator=(const Rmap&) = delete;

    void add(Pfn pfn, std::uint64_t gfn);
    // Returns false when (pfn, gfn) was not there.
    bool remove(Pfn pfn, std::uint64_t gfn);
    std::vector<std::uint64_t> list(Pfn pfn) const;
    std::size_t count(Pfn pfn) const { return list(pfn).size(); }
    std::size_t descriptors() const { return descriptors_.load(std::memory_order_relaxed); }
    std::uint64_t links() const { return links_.load(std::memory_order_relaxed); }

private:
    struct Desc {
        std::uint64_t gfns[kRmapDescEntries];
        unsigned count = 0;
        Desc* next = nullptr;
    };
    static bool inline_entry(std::uint64_t head) { return head & 1; }
    Pfn frames_;
    std::unique_ptr<std::uint64_t[]> heads_;
    std::unique_ptr<PtLock[]> locks_;
    std::atomic<std::size_t> descriptors_{0};
    std::atomic<std::uint64_t> links_{0};
};

} // namespace hv::mmu

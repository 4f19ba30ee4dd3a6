#pragma once
// A set of up to 1024 vCPUs, updated concurrently. Setting a bit reads first
// and writes only when the bit is clear, so a vCPU that keeps faulting into
// the same leaf table does not keep writing its shared cache line.
#include <array>
#include <atomic>
#include <bit>
#include <cstdint>

namespace hv::mmu {

inline constexpr std::uint32_t kMaxVcpus = 1024;

class VcpuMask {
public:
    VcpuMask() = default;
    VcpuMask(const VcpuMask& o) { *this = o; }
    VcpuMask& operator=(const VcpuMask& o) {
        for (std::size_t i = 0; i < kWords; ++i) words_[i].store(o.words_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
        members_.store(o.members_.load(std::memory_order_relaxed), std::memory_order_relaxed);
        return *this;
    }
    // Returns true when this call had to write (the bit was clear).
    bool set(std::uint32_t vcpu) {
        auto& w = words_[vcpu / 64];
        const std::uint64_t bit = 1ull << (vcpu % 64);
        if (w.load(std::memory_order_relaxed) & bit) return false;
        // Sequentially consistent: ordered before the entry the caller
        // publishes or reads next (see ShadowMmu::walk).
        if (!(w.fetch_or(bit, std::memory_order_seq_cst) & bit)) members_.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    // Returns true when the bit was set. Sequentially consistent, like
    // set(): the vCPU dropped its translations before it leaves.
    bool reset(std::uint32_t vcpu) {
        auto& w = words_[vcpu / 64];
        const std::uint64_t bit = 1ull << (vcpu % 64);
        if (!(w.load(std::memory_order_relaxed) & bit)) return false;
        if (!(w.fetch_and(~bit, std::memory_order_seq_cst) & bit)) return false;
        members_.fetch_sub(1, std::memory_order_relaxed);
        return true;
    }
    bool test(std::uint32_t vcpu) const { return words_[vcpu / 64].load(std::memory_order_relaxed) >> (vcpu % 64) & 1; }
    // True when a vCPU other than `vcpu` is in the set. O(1): a count of
    // members kept by set(), which a vCPU joining at this very moment may
    // not have raised yet (the answer is for counting, not for safety).
    bool any_other_than(std::uint32_t vcpu) const {
        const std::uint32_t n = members_.load(std::memory_order_relaxed);
        return n > 1 || (n == 1 && !test(vcpu));
    }
    // Adds o's members; for a mask only the calling thread writes (a zap's
    // targets): plain stores, no locked instruction. any_other_than() is
    // not kept up to date by it (it is for masks built by set()).
    void merge(const VcpuMask& o) {
        for (std::size_t i = 0; i < kWords; ++i) {
            const std::uint64_t v = o.words_[i].load(std::memory_order_seq_cst);
            if (v) words_[i].store(words_[i].load(std::memory_order_relaxed) | v, std::memory_order_relaxed);
        }
    }
    void clear() {
        for (auto& w : words_) w.store(0, std::memory_order_relaxed);
        members_.store(0, std::memory_order_relaxed);
    }
    std::uint32_t count() const {
        std::uint32_t n = 0;
        for (const auto& w : words_) n += static_cast<std::uint32_t>(std::popcount(w.load(std::memory_order_relaxed)));
        return n;
    }
    bool empty() const { return count() == 0; }
    template <class Fn>
    void for_each(Fn&& fn) const {
        for (std::size_t i = 0; i < kWords; ++i) {
            std::uint64_t v = words_[i].load(std::memory_order_relaxed);
            while (v) {
                const int b = std::countr_zero(v);
                fn(static_cast<std::uint32_t>(i * 64 + b));
                v &= v - 1;
            }
        }
    }

private:
    static constexpr std::size_t kWords = kMaxVcpus / 64;
    std::array<std::atomic<std::uint64_t>, kWords> words_{};
    std::atomic<std::uint32_t> members_{0}; // bits set, by set() and reset()
};

} // namespace hv::mmu

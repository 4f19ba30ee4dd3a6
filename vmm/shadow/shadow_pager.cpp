#include "vmm/shadow/shadow_pager.hpp"

#include <vector>

namespace hv {

std::uint32_t ShadowPager::verify_table(const GuestMemory& memory, std::uint64_t table, std::uint64_t count,
                                        std::uint64_t guest_lost, std::uint64_t& lost, std::uint64_t& checked) {
    if (verifying_.exchange(true, std::memory_order_acquire)) return HV_E_BUSY;
    struct Turn {
        std::atomic<bool>& held;
        ~Turn() { held.store(false, std::memory_order_release); }
    } turn{verifying_};
    std::vector<hv_stamp> stamps(count);
    if (!memory.read(table, std::span(reinterpret_cast<std::uint8_t*>(stamps.data()), stamps.size() * sizeof(hv_stamp))))
        return HV_E_FAULT;
    return verify(stamps, guest_lost, lost, checked);
}

} // namespace hv

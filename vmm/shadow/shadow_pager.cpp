#include "vmm/shadow/shadow_pager.hpp"

#include "vmm/kvm/text_format.hpp"

#include <cstring>
#include <optional>
#include <thread>
#include <vector>

namespace hv {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::string_view kLostWriteLines = "lost-write lines";

// The host page behind a guest address, through the memslots.
std::optional<std::uint64_t> host_page(const mmu::ShadowMmu& mmu, std::uint64_t address) {
    const auto ha = mmu.guest_to_host(address);
    if (!ha) return std::nullopt;
    return *ha & ~(kPage - 1);
}

} // namespace

std::uint32_t MmuPager::page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) {
    if (vcpu >= mmu_.config().vcpus) return HV_E_BAD_ARG;
    const mmu::Access access = (error_code & 2) ? mmu::Access::Write : mmu::Access::Read;
    mmu::FaultResult r = mmu_.fault(vcpu, address, access);
    for (unsigned i = 0; r == mmu::FaultResult::Retry && i < hooks_.retries_in_vmm; ++i) {
        std::this_thread::yield();
        r = mmu_.fault(vcpu, address, access);
    }
    switch (r) {
    case mmu::FaultResult::Installed:
    case mmu::FaultResult::Retry: return HV_OK; // the access runs again, and faults again if it must
    case mmu::FaultResult::NoMemslot: return HV_E_NO_MEMSLOT;
    case mmu::FaultResult::Refused: return HV_E_REFUSED;
    case mmu::FaultResult::OutOfFrames: return HV_E_NO_MEMORY;
    }
    return HV_E_BAD_ARG;
}

std::uint32_t MmuPager::host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) {
    changed = false;
    const auto ha = host_page(mmu_, address);
    if (!ha) return HV_E_NO_MEMSLOT;
    const mmu::HostRange page{*ha, *ha + kPage};
    switch (op) {
    case HV_HOST_MIGRATE: changed = host_.migrate(*ha); break;
    case HV_HOST_UNMAP: changed = host_.unmap(page) != 0; break;
    case HV_HOST_PROTECT: changed = host_.protect(page, false) != 0; break;
    case HV_HOST_UNPROTECT: changed = host_.protect(page, true) != 0; break;
    case HV_HOST_MERGE: {
        const auto other = host_page(mmu_, address2);
        if (!other) return HV_E_NO_MEMSLOT;
        changed = host_.merge(*ha, *other);
        break;
    }
    case HV_HOST_SWAP: changed = host_.swap_out(*ha); break;
    case HV_HOST_AGE: changed = host_.age(page); break;
    default: return HV_E_BAD_ARG;
    }
    return HV_OK;
}

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

// The guest's own count is taken as given: a guest can only make its own
// verdict worse by lying, or hide its own losses.
std::uint32_t MmuPager::verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                               std::uint64_t& checked) {
    checked = 0;
    lost = guest_lost;
    if (const std::uint32_t status = check_stamps(stamps); status != HV_OK) return status;
    if (hooks_.quiesce) hooks_.quiesce();
    compare(stamps, guest_lost, lost, checked, &report_log_);
    return HV_OK;
}

std::uint32_t MmuPager::check_stamps(std::span<const hv_stamp> stamps) const {
    for (const hv_stamp& s : stamps)
        if (s.address % 8 || s.address < region_base_ || s.address - region_base_ >= region_size_) return HV_E_BAD_ARG;
    return HV_OK;
}

// The host tables, not the shadow entries, say where each page's contents
// are now (a swapped-out page is read back in).
void MmuPager::compare(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                       std::uint64_t& checked, GuestLog* log) {
    checked = 0;
    lost = guest_lost;
    auto lose = [&](const hv_stamp& s, auto&& why) {
        ++lost;
        if (log)
            log->print_with(kLostWriteLines,
                            [&] { return "lost write: " + hex(s.address) + " expected " + hex(s.value) + ", " + why(); });
    };
    for (const hv_stamp& s : stamps) {
        ++checked;
        const auto ha = mmu_.guest_to_host(s.address);
        if (!ha) {
            lose(s, [] { return std::string("the address is outside every memslot"); });
            continue;
        }
        std::optional<mmu::Pfn> pfn;
        if (s.value == 0 && !host_.swapped_out(*ha)) {
            // Never written: the word must read 0 wherever the page exists
            // (a page never touched is not made present just to look).
            if (const auto t = host_.lookup(*ha)) pfn = t->pfn;
        } else {
            const mmu::HostFaultResult r = host_.fault(*ha, mmu::Access::Read);
            if (r.status != mmu::HostFaultStatus::Mapped) {
                lose(s, [&] { return std::string("the host cannot read the page back: ") + mmu::to_string(r.status); });
                continue;
            }
            pfn = r.translation.pfn;
        }
        if (!pfn) continue;
        std::uint64_t cur = 0;
        std::memcpy(&cur, host_.data_frames().bytes(*pfn).data() + (*ha % kPage), sizeof cur);
        if (cur == s.value) continue;
        const std::uint64_t page = (s.address - region_base_) / kPage;
        if (cur == 0 && hooks_.unmaps_started && hooks_.unmaps_started(page) > s.unmap_done) continue; // discarded by an unmap
        lose(s, [&] { return "found " + hex(cur); });
    }
}

} // namespace hv

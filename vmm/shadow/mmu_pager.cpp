#include "vmm/shadow/mmu_pager.hpp"

#include "mmu/base/units.hpp"
#include "vmm/kvm/text_format.hpp"

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace hv {
namespace {

using Clock = std::chrono::steady_clock;
using hv::mmu::kPage;
constexpr std::string_view kLostWriteLines = "lost-write lines";
constexpr std::string_view kCoherenceCheckLines = "coherence-check lines";

// The host page behind a guest address, through the memslots.
std::optional<std::uint64_t> host_page(const mmu::ShadowMmu& mmu, std::uint64_t address) {
    const auto ha = mmu.guest_to_host(address);
    if (!ha) return std::nullopt;
    return *ha & ~(kPage - 1);
}

bool inside(const mmu::GuestRange& r, std::uint64_t address) { return address >= r.start && address < r.end; }

// Holds a churn between two of its operations for as long as it lives.
class ChurnPause {
public:
    explicit ChurnPause(std::shared_ptr<mmu::HostChurn> churn) : churn_(std::move(churn)) {
        if (churn_) churn_->pause();
    }
    ~ChurnPause() {
        if (churn_) churn_->resume();
    }
    ChurnPause(const ChurnPause&) = delete;
    ChurnPause& operator=(const ChurnPause&) = delete;

private:
    std::shared_ptr<mmu::HostChurn> churn_;
};

} // namespace

MmuPager::MmuPager(mmu::ShadowMmu& mmu, mmu::HostAddressSpace& host, Setup setup)
    : mmu_(mmu), host_(host), setup_(std::move(setup)), fault_ns_(mmu.config().vcpus) {}

std::uint32_t MmuPager::page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) {
    if (vcpu >= fault_ns_.size()) return HV_E_BAD_ARG;
    const auto t0 = Clock::now();
    const mmu::Access access = (error_code & 2) ? mmu::Access::Write : mmu::Access::Read;
    const mmu::FaultResult r = fault_with_retries(vcpu, address, access);
    fault_ns_[vcpu].add(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
    switch (r) {
    case mmu::FaultResult::Installed:
    case mmu::FaultResult::Retry: return HV_OK; // the access runs again, and faults again if it must
    case mmu::FaultResult::NoMemslot: return HV_E_NO_MEMSLOT;
    case mmu::FaultResult::Refused: return HV_E_REFUSED;
    case mmu::FaultResult::OutOfFrames: return HV_E_NO_MEMORY;
    }
    return HV_E_BAD_ARG;
}

mmu::FaultResult MmuPager::fault_with_retries(std::uint32_t vcpu, std::uint64_t address, mmu::Access access) {
    mmu::FaultResult r = mmu_.fault(vcpu, address, access);
    for (unsigned i = 0; r == mmu::FaultResult::Retry && i < kFaultRetries; ++i) {
        std::this_thread::yield();
        r = mmu_.fault(vcpu, address, access);
    }
    return r;
}

std::uint32_t MmuPager::host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) {
    host_ops_.fetch_add(1, std::memory_order_relaxed);
    if (op != HV_HOST_UNMAP || !inside(setup_.region, address)) return run_host_op(op, address, address2, changed);
    const std::uint64_t page = (address - setup_.region.start) / kPage;
    setup_.unmaps.begin(page);
    const std::uint32_t status = run_host_op(op, address, address2, changed);
    setup_.unmaps.end(page);
    return status;
}

std::uint32_t MmuPager::run_host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) {
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

bool MmuPager::block_allowed(std::uint64_t gpa, std::uint64_t size) const {
    if (setup_.call_ranges.empty()) return true;
    for (const mmu::GuestRange& r : setup_.call_ranges)
        if (gpa >= r.start && gpa <= r.end && size <= r.end - gpa) return true;
    return false;
}

void MmuPager::hold_still_while_verifying(std::shared_ptr<mmu::HostChurn> churn) {
    std::lock_guard lock(churn_mutex_);
    churn_ = std::move(churn);
}

std::shared_ptr<mmu::HostChurn> MmuPager::churn() const {
    std::lock_guard lock(churn_mutex_);
    return churn_;
}

std::uint32_t MmuPager::verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                               std::uint64_t& checked) {
    checked = 0;
    lost = guest_lost;
    if (const std::uint32_t status = check_stamps(stamps); status != HV_OK) return status;
    {
        const ChurnPause pause(churn());
        compare(stamps, lost, checked);
    }
    log_.print_with(kCoherenceCheckLines, [&] {
        return "coherence check: " + std::to_string(checked) + " stamps checked, " + std::to_string(lost - guest_lost) +
               " lost at the end, " + std::to_string(guest_lost) +
               " reported lost by the guest (seen while running): lost_writes=" + std::to_string(lost);
    });
    return HV_OK;
}

std::uint32_t MmuPager::check_stamps(std::span<const hv_stamp> stamps) const {
    for (const hv_stamp& s : stamps)
        if (s.address % 8 || !inside(setup_.region, s.address)) return HV_E_BAD_ARG;
    return HV_OK;
}

// The host tables, not the shadow entries, say where each page's contents
// are now (a swapped-out page is read back in).
void MmuPager::compare(std::span<const hv_stamp> stamps, std::uint64_t& lost, std::uint64_t& checked) {
    auto lose = [&](const hv_stamp& s, auto&& why) {
        ++lost;
        log_.print_with(kLostWriteLines,
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
        const std::uint64_t page = (s.address - setup_.region.start) / kPage;
        if (cur == 0 && setup_.unmaps.started(page) > s.unmap_done) continue; // discarded by an unmap
        lose(s, [&] { return "found " + hex(cur); });
    }
}

LatencyHistogram MmuPager::fault_latency() const {
    LatencyHistogram all;
    for (const auto& h : fault_ns_) all.merge(h);
    return all;
}

} // namespace hv

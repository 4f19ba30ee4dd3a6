// ShadowMmu::audit(): every present entry checked against the memslots,
// the host tables and the rmap, for quiescent states.
#include "mmu/base/units.hpp"
#include "mmu/secondary/shadow_mmu.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace hv::mmu {

std::vector<std::string> ShadowMmu::audit() {
    std::vector<std::string> problems;
    // Copy the memslots and drop their lock before asking the host: the host
    // calls into us (invalidate_page) holding its own locks, and we never
    // take a host lock while holding one of ours except on the fault path.
    MemslotTable slots_copy;
    std::vector<StaticRange> statics_copy;
    {
        ReaderSlotLock::SharedGuard slots(slots_lock_, slots_lock_.shared_slot());
        slots_copy = memslots_;
        statics_copy = statics_;
    }
    std::size_t present = 0;
    table_.for_each_leaf(0, MemslotTable::kAddressLimit, 0, [&](std::uint64_t ga, const auto& slot) {
        const std::uint64_t e = at(slot.entry).load(std::memory_order_acquire);
        if (e & kStaticBit) {
            // Static entries have no memslot and no rmap link; they only
            // have to lie in a static range.
            if (std::none_of(statics_copy.begin(), statics_copy.end(),
                             [&](const StaticRange& r) { return r.start <= ga && ga < r.end; }))
                problems.push_back("static entry for " + hex(ga) + " lies outside every static range");
            return;
        }
        ++present;
        const auto ha = slots_copy.guest_to_host(ga);
        if (!ha) {
            problems.push_back("entry for " + hex(ga) + " lies outside every memslot");
            return;
        }
        const auto host = host_.lookup(*ha);
        if (!host)
            problems.push_back("entry for " + hex(ga) + " maps frame " + hex(Pte::pfn(e)) + " but host page " +
                               hex(*ha) + " is not present");
        else if (host->pfn != Pte::pfn(e))
            problems.push_back("entry for " + hex(ga) + " maps frame " + hex(Pte::pfn(e)) + ", the host maps " +
                               hex(host->pfn));
        else if (Pte::writable(e) && !host->writable)
            problems.push_back("entry for " + hex(ga) + " is writable, the host page is read-only");
        const auto links = rmap_.list(Pte::pfn(e));
        if (std::find(links.begin(), links.end(), ga >> 12) == links.end())
            problems.push_back("entry for " + hex(ga) + " has no rmap link from frame " + hex(Pte::pfn(e)));
    });
    if (rmap_.links() != present)
        problems.push_back("rmap holds " + std::to_string(rmap_.links()) + " links for " + std::to_string(present) +
                           " present entries");
    // Static entries never change after map_static: one that did means
    // something wrote into a table (after a guest triple fault, this tells
    // a wrecked table from a CPU that lost its way on intact ones).
    for (const StaticRange& r : statics_copy)
        for (std::uint64_t ga = r.start; ga < r.end; ga += kPage) {
            const std::uint64_t want = static_entry(r.first_frame + (ga - r.start) / kPage, r.writable);
            const std::uint64_t e = entry(ga);
            if (e != want)
                problems.push_back("static entry for " + hex(ga) + " is " + hex(e) + ", map_static wrote " + hex(want));
        }
    return problems;
}

} // namespace hv::mmu

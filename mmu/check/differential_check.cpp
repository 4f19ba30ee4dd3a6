// check(): the comparison of a DifferentialRig (the real MMU stack) with the
// ReferenceModel after a step: memslots, host pages, shadow entries and the
// MMU's own audit, one line per disagreement.
#include "mmu/base/units.hpp"
#include "mmu/check/reference_model.hpp"

#include <algorithm>
#include <tuple>

namespace hv::mmu {

using namespace detail;
namespace {
using Pte = X86PteFormat;
constexpr std::uint64_t kLimit = MemslotTable::kAddressLimit;

void check_memslots(DifferentialRig& rig, const ReferenceModel& model, std::vector<std::string>& out) {
    auto key = [](const Memslot& s) { return std::tuple(s.id, s.guest_start, s.size, s.host_start, s.writable); };
    auto text = [](const Memslot& s) {
        return std::to_string(s.id) + ":" + range_text(s.guest_start, s.guest_end()) + "->" + hex(s.host_start) +
               (s.writable ? " rw " : " ro ");
    };
    std::vector<decltype(key(Memslot{}))> expected_keys, found_keys;
    std::string expected, found;
    for (const auto& [start, s] : model.memslots()) expected_keys.push_back(key(s));
    for (const Memslot& s : rig.shadow.memslots()) found_keys.push_back(key(s));
    if (expected_keys == found_keys) return; // the common case, without building text
    for (const auto& [start, s] : model.memslots()) expected += text(s);
    for (const Memslot& s : rig.shadow.memslots()) found += text(s);
    out.push_back("memslots: expected " + expected + ", found " + found);
}

void check_host(DifferentialRig& rig, const ReferenceModel& model, std::vector<std::string>& out) {
    std::map<std::uint64_t, std::uint64_t> present; // page -> PTE
    rig.host.for_each_present({0, kLimit}, [&](std::uint64_t a, std::uint64_t pte) { present.emplace(a, pte); });
    struct Sharing {
        Pfn pfn;
        std::uint64_t first_page;
        std::uint32_t pages;
    };
    std::map<std::uint64_t, Sharing> by_frame_id; // a map count check per id also catches two ids on one frame
    std::size_t swapped = 0;
    for (const auto& [ha, page] : model.host_pages()) {
        const auto it = present.find(ha);
        // Built only for a mismatch: check() runs after every step of every
        // differential test and fuzz input, and almost always finds none.
        const auto where = [at = ha] { return "host page " + hex(at) + ": "; };
        if (page.swapped) {
            ++swapped;
            if (it != present.end()) out.push_back(where() + "expected swapped out, found present on frame " + hex(Pte::pfn(it->second)));
            continue;
        }
        if (it == present.end()) {
            out.push_back(where() + "expected present with token " + std::to_string(page.token) + ", found absent");
            continue;
        }
        const Pfn pfn = Pte::pfn(it->second);
        if (Pte::writable(it->second) != page.writable)
            out.push_back(where() + (page.writable ? "expected writable, found read-only" : "expected read-only, found writable"));
        if (rig.read_token(pfn) != page.token)
            out.push_back(where() + "expected token " + std::to_string(page.token) + ", found " + std::to_string(rig.read_token(pfn)));
        auto [share, first] = by_frame_id.emplace(page.frame, Sharing{pfn, ha, 0});
        ++share->second.pages;
        if (!first && share->second.pfn != pfn)
            out.push_back(where() + "expected to share frame " + hex(share->second.pfn) + " with host page " +
                          hex(share->second.first_page) + ", found frame " + hex(pfn));
    }
    for (const auto& [ha, pte] : present)
        if (!model.host_pages().contains(ha))
            out.push_back("host page " + hex(ha) + ": expected absent, found present on frame " + hex(Pte::pfn(pte)));
    for (const auto& [id, share] : by_frame_id) {
        const bool allocated = rig.frames.is_allocated(share.pfn);
        if (rig.host.map_count(share.pfn) != share.pages || !allocated)
            out.push_back("frame " + hex(share.pfn) + ": expected allocated with map count " + std::to_string(share.pages) +
                          ", found map count " + std::to_string(rig.host.map_count(share.pfn)) +
                          (allocated ? "" : ", not allocated"));
    }
    if (rig.host.swap_slots_in_use() != swapped)
        out.push_back("swap slots: expected " + std::to_string(swapped) + ", found " + std::to_string(rig.host.swap_slots_in_use()));
}

void check_shadow(DifferentialRig& rig, const ReferenceModel& model, std::vector<std::string>& out) {
    std::map<std::uint64_t, std::uint64_t> real; // guest page -> entry
    rig.shadow.table().for_each_leaf(0, kLimit, 0, [&](std::uint64_t ga, const auto& slot) {
        real.emplace(ga, RadixTable<Pte>::load(slot));
    });
    for (const auto& [ga, e] : real) {
        const auto where = [at = ga] { return "shadow entry for guest " + hex(at) + ": "; };
        const auto m = model.shadow_entries().find(ga);
        if (m == model.shadow_entries().end()) {
            out.push_back(where() + "expected none, found one mapping frame " + hex(Pte::pfn(e)));
            continue;
        }
        const Memslot* slot = model.find_slot(ga);
        const std::uint64_t ha = slot ? slot->host_start + (ga - slot->guest_start) : 0;
        const auto it = model.host_pages().find(ha);
        if (!slot || it == model.host_pages().end() || it->second.swapped) {
            out.push_back(where() + "the model holds an entry without a memslot or a present host page (a model bug)");
            continue;
        }
        const ReferenceModel::HostPage& page = it->second;
        const auto host = rig.host.lookup(ha);
        if (!host || host->pfn != Pte::pfn(e))
            out.push_back(where() + "expected the frame of host page " + hex(ha) + " (" +
                          (host ? hex(host->pfn) : "absent") + "), found frame " + hex(Pte::pfn(e)));
        if (Pte::writable(e) && !m->second.writable)
            out.push_back(where() + "expected read-only (" +
                          (!slot->writable ? "read-only memslot" : page.merged ? "merged host page" : "read-only host page") +
                          "), found writable");
        else if (!Pte::writable(e) && m->second.writable)
            out.push_back(where() + "expected writable, found read-only");
        if (rig.read_token(Pte::pfn(e)) != page.token)
            out.push_back(where() + "expected to read token " + std::to_string(page.token) + ", found " +
                          std::to_string(rig.read_token(Pte::pfn(e))));
    }
    for (const auto& [ga, entry] : model.shadow_entries())
        if (!real.contains(ga)) out.push_back("shadow entry for guest " + hex(ga) + ": expected present, found none");
}

} // namespace

std::vector<std::string> check(DifferentialRig& rig, const ReferenceModel& model, const StepOutcome* last) {
    std::vector<std::string> out;
    if (last && !last->matched()) out.push_back("outcome: expected " + last->expected + ", found " + last->found);
    check_memslots(rig, model, out);
    check_host(rig, model, out);
    check_shadow(rig, model, out);
    for (const std::string& p : rig.shadow.audit()) out.push_back("audit: " + p);
    return out;
}

} // namespace hv::mmu

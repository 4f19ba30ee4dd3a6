#pragma once
// ReferenceModel: what the host address space and the shadow MMU must look
// like from the outside, kept in plain maps with no locks and no page tables,
// so a differential test (and later a fuzzer) can run one operation sequence
// through the real system and the model and compare them after every step.
//
// Page contents are modelled as one 64-bit token at kTokenOffset; every other
// byte of a data page stays zero because only GuestWrite writes, and only
// there. So two pages hold equal bytes exactly when their tokens are equal,
// which is what merge compares.
//
// The model is exact for one thread: it says which shadow entries exist,
// which host pages are present, swapped or shared, and what every operation
// returns, including the retry a sequence-count fault takes after its own
// copy-on-write break (the break is an invalidation of the faulting page).
// Frame numbers are the one thing it does not know: it names frames by its
// own ids, and check() verifies that equal ids map to one real frame.
#include "mmu/base/units.hpp"
#include "mmu/secondary/shadow_mmu.hpp"

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace hv::mmu {

inline constexpr std::size_t kTokenOffset = 2048;

// One operation on the system. Addresses are page-aligned where a range is
// involved; ReferenceModel::valid() says which ops the real API would throw
// on for reasons other than the ones it reports (those are skipped).
namespace op {
struct AddMemslot { Memslot slot; };
struct AliasMemslot { std::uint32_t existing = 0, id = 0; std::uint64_t guest_start = 0; };
struct RemoveMemslot { std::uint32_t id = 0; };
struct Fault { std::uint32_t vcpu = 0; std::uint64_t guest_address = 0; Access access = Access::Read; };
// A guest store of `token`: through the present shadow entry when it is
// writable, else after faulting for write (again while the fault says Retry,
// as a vCPU would, up to kGuestWriteAttempts faults).
struct GuestWrite { std::uint32_t vcpu = 0; std::uint64_t guest_address = 0; std::uint64_t token = 0; };
struct MapAnonymous { HostRange range; bool writable = true; };
struct Unmap { HostRange range; };
struct Protect { HostRange range; bool writable = false; };
struct Migrate { std::uint64_t address = 0; };
struct Merge { std::uint64_t keep = 0, other = 0; };
struct SwapOut { std::uint64_t address = 0; };
struct Age { HostRange range; };
struct ZapGuestRange { std::uint64_t start = 0, end = 0; };
} // namespace op

using Op = std::variant<op::AddMemslot, op::AliasMemslot, op::RemoveMemslot, op::Fault, op::GuestWrite,
                        op::MapAnonymous, op::Unmap, op::Protect, op::Migrate, op::Merge, op::SwapOut, op::Age,
                        op::ZapGuestRange>;
inline constexpr int kGuestWriteAttempts = 3;

// "fault": the op's kind, for statistics. describe() gives the whole op,
// "fault(vcpu 1, 0x10000, write)", for failure messages and fuzzer repros.
const char* name(const Op& op);
std::string describe(const Op& op);

class ReferenceModel {
public:
    struct HostPage {
        bool swapped = false;    // absent, contents saved in a swap slot; the fields below are for present pages
        bool writable = false;   // the host PTE's RW bit
        bool merged = false;     // shares its frame copy-on-write (stays read-only until a write breaks it)
        bool young = false;      // the host PTE's accessed bit
        std::uint64_t frame = 0; // model frame id: present pages with equal ids share one real frame
        std::uint64_t token = 0;
    };
    struct ShadowEntry {
        bool writable = false;
        bool young = false; // the entry's accessed bit, which age() reports and clears
    };

    // page_at_a_time: the host fires invalidate_page for each page it changed
    // (the 2008 shape) instead of a range over everything it looked at, so
    // unmap, protect, migrate and swap_out zap only the pages they changed.
    explicit ReferenceModel(ShadowConfig config, bool page_at_a_time = false)
        : config_(config), page_at_a_time_(page_at_a_time) {}

    // False for ops the real API would reject by throwing something other
    // than what the outcome reports (misaligned host ranges, a vCPU index
    // out of range, addresses past 2^47): callers skip them on both sides.
    bool valid(const Op& op) const;
    // Applies a valid op and returns the outcome the real system must report,
    // in DifferentialRig::apply's words.
    std::string apply(const Op& op);

    // Host pages that are present or swapped, by page address; others are absent.
    const std::map<std::uint64_t, HostPage>& host_pages() const { return pages_; }
    // Present shadow entries, by guest page address.
    const std::map<std::uint64_t, ShadowEntry>& shadow_entries() const { return entries_; }
    // Memslots, by guest start.
    const std::map<std::uint64_t, Memslot>& memslots() const { return slots_; }
    const Memslot* find_slot(std::uint64_t guest_address) const;
    std::optional<std::uint64_t> guest_to_host(std::uint64_t guest_address) const;

private:
    struct Region {
        std::uint64_t end = 0;
        bool writable = false;
    };
    enum class HostFault { Mapped, MappedAfterCowBreak, NoMapping, ReadOnly };

    std::string apply_op(const op::AddMemslot& o);
    std::string apply_op(const op::AliasMemslot& o);
    std::string apply_op(const op::RemoveMemslot& o);
    std::string apply_op(const op::Fault& o);
    std::string apply_op(const op::GuestWrite& o);
    std::string apply_op(const op::MapAnonymous& o);
    std::string apply_op(const op::Unmap& o);
    std::string apply_op(const op::Protect& o);
    std::string apply_op(const op::Migrate& o);
    std::string apply_op(const op::Merge& o);
    std::string apply_op(const op::SwapOut& o);
    std::string apply_op(const op::Age& o);
    std::string apply_op(const op::ZapGuestRange& o);

    bool add_slot(const Memslot& slot);
    std::map<std::uint64_t, Memslot>::iterator slot_by_id(std::uint32_t id);
    HostPage* movable_page(std::uint64_t address); // invalidates it first
    FaultResult fault(std::uint64_t guest_address, Access access);
    HostFault host_fault(std::uint64_t host_address, Access access);
    FaultResult install(std::uint64_t guest_page, const Memslot& slot, const HostPage& page, Access access);
    const Region* region_for(std::uint64_t host_address) const;
    // What invalidate_range_start does to the shadow MMU: drops the entries of
    // every guest page whose memslot maps a page of the host range.
    void invalidate(HostRange range);
    std::size_t zap_guest(std::uint64_t start, std::uint64_t end);
    template <class Fn>
    void for_each_guest_range(HostRange range, Fn&& fn) const; // fn(guest_start, guest_end)

    ShadowConfig config_;
    bool page_at_a_time_;
    std::map<std::uint64_t, Region> regions_; // by start, split by protect as the host splits them
    std::map<std::uint64_t, HostPage> pages_;
    std::map<std::uint64_t, Memslot> slots_;
    std::map<std::uint64_t, ShadowEntry> entries_;
    std::uint64_t next_frame_ = 1;
};

// ---- The differential harness -----------------------------------------------
// Glue for tests and fuzzers: run an op on both sides, then compare.

namespace detail {
// Outcomes are words, so that a mismatch reads "expected X, found Y".
inline std::string count_outcome(std::size_t n) { return std::to_string(n) + " pages"; }
inline std::string bool_outcome(bool b) { return b ? "true" : "false"; }
inline std::string accept_outcome(bool ok) { return ok ? "accepted" : "rejected"; }
inline std::string range_text(std::uint64_t start, std::uint64_t end) { return "[" + hex(start) + ", " + hex(end) + ")"; }

// The guest's store, shared by model and rig so both take the same path:
// through a writable entry, else fault (again on Retry) and store once the
// fault installed one. Each side passes its own view of entry and fault.
template <class WritableEntry, class FaultFn, class Store>
std::string guest_write(WritableEntry&& writable_entry, FaultFn&& fault, Store&& store) {
    std::string out;
    for (int attempt = 0; attempt < kGuestWriteAttempts && !writable_entry(); ++attempt) {
        const FaultResult r = fault();
        out += std::string("fault ") + to_string(r) + ", ";
        if (r != FaultResult::Retry) break;
    }
    if (!writable_entry()) return out + "no write";
    store();
    return out + "wrote";
}

// "accepted" unless fn throws std::invalid_argument (MemslotError is one).
template <class Fn>
std::string accepts(Fn&& fn) {
    try {
        fn();
        return accept_outcome(true);
    } catch (const std::invalid_argument&) {
        return accept_outcome(false);
    }
}
} // namespace detail

// The real system under test, driven from one thread.
struct DifferentialRig {
    FrameSpace frames;
    HostAddressSpace host;
    ShadowMmu shadow;

    explicit DifferentialRig(ShadowConfig config, bool page_at_a_time = false, std::size_t frame_count = 512)
        : frames(frame_count), host(frames, page_at_a_time), shadow(host, config) {}

    std::uint64_t read_token(Pfn pfn) const {
        std::uint64_t token;
        std::memcpy(&token, frames.bytes(pfn).data() + kTokenOffset, sizeof token);
        return token;
    }
    void write_token(Pfn pfn, std::uint64_t token) {
        std::memcpy(frames.bytes(pfn).data() + kTokenOffset, &token, sizeof token);
    }

    // Runs op and reports its outcome in the model's words.
    std::string apply(const Op& any) {
        using namespace detail;
        using Pte = X86PteFormat;
        struct Apply {
            DifferentialRig& r;
            std::string operator()(const op::AddMemslot& o) { return accepts([&] { r.shadow.add_memslot(o.slot); }); }
            std::string operator()(const op::AliasMemslot& o) {
                return accepts([&] { r.shadow.alias_memslot(o.existing, o.id, o.guest_start); });
            }
            std::string operator()(const op::RemoveMemslot& o) { return accepts([&] { r.shadow.remove_memslot(o.id); }); }
            std::string operator()(const op::Fault& o) { return to_string(r.shadow.fault(o.vcpu, o.guest_address, o.access)); }
            std::string operator()(const op::GuestWrite& o) {
                const std::uint64_t ga = o.guest_address & ~std::uint64_t{kPage - 1};
                return guest_write([&] { return Pte::writable(r.shadow.entry(ga)); },
                                   [&] { return r.shadow.fault(o.vcpu, ga, Access::Write); },
                                   [&] { r.write_token(Pte::pfn(r.shadow.entry(ga)), o.token); });
            }
            std::string operator()(const op::MapAnonymous& o) {
                return accepts([&] { r.host.map_anonymous(o.range, o.writable); });
            }
            std::string operator()(const op::Unmap& o) { return count_outcome(r.host.unmap(o.range)); }
            std::string operator()(const op::Protect& o) { return count_outcome(r.host.protect(o.range, o.writable)); }
            std::string operator()(const op::Migrate& o) { return bool_outcome(r.host.migrate(o.address)); }
            std::string operator()(const op::Merge& o) { return bool_outcome(r.host.merge(o.keep, o.other)); }
            std::string operator()(const op::SwapOut& o) { return bool_outcome(r.host.swap_out(o.address)); }
            std::string operator()(const op::Age& o) { return bool_outcome(r.host.age(o.range)); }
            std::string operator()(const op::ZapGuestRange& o) { return count_outcome(r.shadow.zap_guest_range(o.start, o.end)); }
        };
        return std::visit(Apply{*this}, any);
    }
};

struct StepOutcome {
    std::string expected, found;
    bool matched() const { return expected == found; }
};

// Applies op to the model and, when the model takes it as valid, to the rig
// (an unexpected exception from the rig becomes its outcome).
inline StepOutcome apply_both(DifferentialRig& rig, ReferenceModel& model, const Op& op) {
    if (!model.valid(op)) return {"skipped", "skipped"};
    StepOutcome out{model.apply(op), {}};
    try {
        out.found = rig.apply(op);
    } catch (const std::exception& e) {
        out.found = std::string("threw: ") + e.what();
    }
    return out;
}

// Mismatches between the rig and the model, one line each saying what was
// expected and what was found: the outcome of the last step (when given),
// memslots, host pages (presence, writability, token, frame sharing, map
// counts, swap slots), shadow entries (presence, frame, writability, the
// token read through them) and ShadowMmu::audit(). Empty when they agree.
std::vector<std::string> check(DifferentialRig& rig, const ReferenceModel& model, const StepOutcome* last = nullptr);

} // namespace hv::mmu

// Fuzz target `formats`: entry formats and the radix table walker on
// arbitrary bits.
//  - Entries: a random 64-bit word decoded by both formats obeys the
//    decoders' contract (no permission without presence, perms() agrees with
//    the single decoders, pfn() fits 40 bits) and every with_*() changes its
//    one bit and nothing else; a random (pfn, perms, large) request either
//    throws std::invalid_argument for a reason the format documents or
//    encodes an entry that decodes to exactly the request.
//  - Tables: map / unmap / lookup / walk / range walks / free_empty_tables
//    on a small frame space, checked against a plain map of what was mapped;
//    then raw words stored anywhere in the frame space (a corrupted tree)
//    and walked again: a wild pfn must end in std::out_of_range, never in a
//    read or write outside the frame space (ASan would say).
// Any broken rule prints what was expected and found and aborts.
#include "mmu/base/frame_space.hpp"
#include "mmu/base/units.hpp"
#include "mmu/check/choice_source.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/radix_table.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

using namespace hv::mmu;

namespace {

[[noreturn]] void fail(const char* format, const std::string& what) {
    std::fprintf(stderr, "fuzz formats (%s): %s\n", format, what.c_str());
    std::abort();
}

template <EntryFormat F>
void expect(bool ok, const std::string& what) {
    if (!ok) fail(F::name, what);
}

// The decoders' contract on any word.
template <EntryFormat F>
void check_decode(std::uint64_t e) {
    const std::string at = " for entry " + hex(e);
    const bool p = F::present(e);
    expect<F>(p || (!F::readable(e) && !F::writable(e) && !F::executable(e) && !F::user(e)),
              "a non-present entry grants no right" + at);
    expect<F>(F::perms(e) == Perms{F::readable(e), F::writable(e), F::executable(e), F::user(e)},
              "perms() equal to the single decoders" + at);
    expect<F>(F::pfn(e) < (Pfn{1} << 40), "a pfn below 2^40" + at);
    expect<F>(F::with_pfn(e, F::pfn(e)) == e, "with_pfn(e, pfn(e)) == e" + at);
    for (bool on : {false, true}) {
        const std::uint64_t a = F::with_accessed(e, on), d = F::with_dirty(e, on), w = F::with_writable(e, on);
        expect<F>(F::accessed(a) == on && __builtin_popcountll(a ^ e) <= 1, "with_accessed changes one bit" + at);
        expect<F>(F::dirty(d) == on && __builtin_popcountll(d ^ e) <= 1, "with_dirty changes one bit" + at);
        expect<F>(__builtin_popcountll(w ^ e) <= 1 && F::pfn(w) == F::pfn(e), "with_writable changes one bit" + at);
        expect<F>(!on || !F::writable(w) || F::present(w), "writable implies present" + at);
        expect<F>(on || !F::writable(w), "with_writable(e, false) is not writable" + at);
    }
}

// make_leaf / make_table: refused for a documented reason, or exact.
template <EntryFormat F>
void check_encode(Pfn pfn, Perms want, bool large) {
    const std::string at = " for pfn " + hex(pfn) + " perms " + to_string(want) + (large ? " large" : "");
    const bool too_big = pfn >= (Pfn{1} << 40), misaligned = large && pfn % 512 != 0;
    bool inexpressible;
    if constexpr (std::is_same_v<F, EptFormat>) inexpressible = want.write && !want.read;
    else inexpressible = !want.read;
    std::uint64_t e = 0;
    try {
        e = F::make_leaf(pfn, want, large);
    } catch (const std::invalid_argument& ex) {
        expect<F>(too_big || misaligned || inexpressible, std::string("make_leaf refused a valid request") + at +
                                                              ": " + ex.what());
        return;
    }
    expect<F>(!too_big && !misaligned && !inexpressible, "make_leaf refused an invalid request" + at);
    expect<F>(F::pfn(e) == pfn, "pfn(make_leaf) == pfn" + at + ", found " + hex(F::pfn(e)));
    expect<F>(F::is_large(e) == large, "is_large(make_leaf) == large" + at);
    Perms got = F::perms(e);
    Perms expected = want;
    if constexpr (std::is_same_v<F, EptFormat>) expected.user = want.read || want.write || want.exec;
    expect<F>(got == expected, "perms " + to_string(expected) + at + ", found " + to_string(got));
    expect<F>(!F::accessed(e) && !F::dirty(e), "a fresh leaf neither accessed nor dirty" + at);
    check_decode<F>(e);
    if (pfn < (Pfn{1} << 40)) {
        const std::uint64_t t = F::make_table(pfn);
        expect<F>(F::present(t) && F::pfn(t) == pfn && !F::is_large(t), "make_table: present, pfn, not large" + at);
    }
}

// A request with a good chance of being valid: small pfns, often aligned.
template <EntryFormat F>
void check_entries(ByteChoices& in) {
    check_decode<F>(in.word());
    Pfn pfn = in.below(4) == 0 ? in.word() : in.below(1 << 20);
    if (in.below(2)) pfn &= ~Pfn{511};
    const unsigned bits = static_cast<unsigned>(in.below(16));
    check_encode<F>(pfn, Perms{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0}, in.below(2) == 1);
}

constexpr std::size_t kFrames = 64;

// An address in one of four 2 MiB neighbourhoods (so tables are shared), or
// anywhere below 2^48, or past it (refused with std::out_of_range).
std::uint64_t address(ByteChoices& in) {
    static constexpr std::uint64_t kBases[] = {0, 0x7fffffe00000, 0x40000000 - 0x100000, 0x8000000000};
    switch (in.below(8)) {
    case 0: return in.word() & ((std::uint64_t{1} << 48) - 1);
    case 1: return in.word();
    default: return kBases[in.below(4)] + in.below(1024) * kPage + in.below(kPage);
    }
}

template <EntryFormat F>
void check_tables(ByteChoices& in) {
    using Table = RadixTable<F>;
    FrameSpace frames(kFrames);
    std::optional<Table> table = Table::create(frames);
    expect<F>(table.has_value(), "a root from a fresh frame space");
    std::map<std::uint64_t, std::uint64_t> mapped; // page -> entry, while the tree is intact
    bool corrupted = false;
    const auto allowed = [&](const std::exception& ex, const char* op, bool may) {
        if (!may) fail(F::name, std::string(op) + " threw on an intact tree: " + ex.what());
    };
    for (int step = 0; step < 64 && !in.exhausted(); ++step) {
        const std::uint64_t addr = address(in);
        const std::uint64_t page = addr & ~std::uint64_t{kPage - 1};
        const bool canonical = addr < Table::kAddressEnd;
        try {
            switch (in.below(7)) {
            case 0: { // map a valid leaf
                const std::uint64_t leaf = F::make_leaf(1 + in.below(1000), Perms{true, true, false, false}, false);
                const std::uint64_t failed_before = frames.counters().failed;
                const bool ok = table->map(addr, leaf);
                expect<F>(canonical, "map past 2^48 refused");
                if (ok && !corrupted) mapped[page] = leaf;
                expect<F>(ok || corrupted || frames.counters().failed > failed_before,
                          "map fails only when the frame space is exhausted, at " + hex(addr));
                break;
            }
            case 1: { // unmap
                const std::uint64_t old = table->unmap(addr);
                expect<F>(canonical, "unmap past 2^48 refused");
                if (!corrupted) {
                    const auto it = mapped.find(page);
                    expect<F>(old == (it == mapped.end() ? 0 : it->second), "unmap returns what map stored at " + hex(addr));
                    if (it != mapped.end()) mapped.erase(it);
                }
                break;
            }
            case 2: { // lookup and walk
                const std::uint64_t e = table->lookup(addr);
                const auto w = table->walk(addr);
                expect<F>(canonical, "lookup past 2^48 refused");
                if (!corrupted) {
                    const auto it = mapped.find(page);
                    expect<F>(e == (it == mapped.end() ? 0 : it->second), "lookup finds what map stored at " + hex(addr));
                    expect<F>(w.status != WalkStatus::LargeLeaf, "no large leaf in a tree of 4 KiB maps");
                }
                if (w.found()) expect<F>(w.slot.index == Table::index(addr, 1), "the leaf slot of the address");
                break;
            }
            case 3: { // a range walk of at most 1 GiB, with a budget
                const std::uint64_t start = canonical ? addr : addr % Table::kAddressEnd;
                const std::uint64_t end = std::min(Table::kAddressEnd, start + in.below(std::uint64_t{1} << 30));
                const std::size_t budget = in.below(600);
                std::size_t visited = 0;
                std::uint64_t last = 0;
                const std::uint64_t resume = table->for_each_leaf(start, end, budget, [&](std::uint64_t at, auto) {
                    expect<F>(visited == 0 || at > last, "range walk in address order");
                    last = at;
                    ++visited;
                });
                expect<F>(budget == 0 || visited <= budget, "range walk within its budget");
                expect<F>(resume <= end && resume >= start, "range walk resumes inside the range");
                if (!corrupted) {
                    std::size_t want = 0;
                    // A leaf is in the range when the page it maps overlaps it.
                    const std::uint64_t first = start & ~std::uint64_t{kPage - 1};
                    if (start < end)
                        for (auto it = mapped.lower_bound(first); it != mapped.end() && it->first < end; ++it) ++want;
                    if (budget == 0 || want < budget)
                        expect<F>(visited == want, "range walk visits every present leaf of [" + hex(start) + ", " +
                                                       hex(end) + "): expected " + std::to_string(want) +
                                                       ", found " + std::to_string(visited));
                }
                break;
            }
            case 4: // free empty tables (not on a corrupted tree: it would free wild frames)
                if (!corrupted) {
                    const std::uint64_t start = canonical ? page : 0;
                    table->free_empty_tables(start, std::min(Table::kAddressEnd, start + in.below(std::uint64_t{1} << 32)));
                    for (const auto& [p, e] : mapped)
                        expect<F>(table->lookup(p) == e, "free_empty_tables keeps every table in use, at " + hex(p));
                }
                break;
            case 5: // count tables (not on a corrupted tree: a cycle makes it 512^3 walks)
                if (!corrupted) expect<F>(table->count_tables() == frames.counters().in_use, "every frame in use is a table");
                break;
            default: { // corrupt: a raw word anywhere in the frame space
                const Pfn pfn = in.below(kFrames);
                frames.entries(pfn)[in.below(512)] = in.below(2) ? in.word() : F::make_table(in.below(kFrames + 4));
                corrupted = true;
                break;
            }
            }
        } catch (const std::out_of_range& ex) {
            // Past 2^48, or a wild pfn in a corrupted tree.
            allowed(ex, "a walk", !canonical || corrupted);
        } catch (const std::logic_error& ex) {
            allowed(ex, "unmap (a large leaf)", corrupted); // only a corrupted tree has large leaves
        }
    }
    if (corrupted) {
        // destroy() would free wild frames: unlink everything, free the root alone.
        for (unsigned i = 0; i < Table::kEntries; ++i) frames.entries(table->root())[i] = 0;
    } else {
        table->destroy();
        expect<F>(frames.counters().in_use == 0, "destroy frees every table: " +
                                                     std::to_string(frames.counters().in_use) + " frames left");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    ByteChoices in({data, size});
    const bool ept = in.below(2) == 0;
    for (int i = 0; i < 16 && !in.exhausted(); ++i) {
        check_entries<EptFormat>(in);
        check_entries<X86PteFormat>(in);
    }
    if (ept) check_tables<EptFormat>(in);
    else check_tables<X86PteFormat>(in);
    return 0;
}

#pragma once
// OpGenerator: operation sequences for the differential check (see
// reference_model.hpp), over small host and guest windows so that ops
// collide often. The same generator serves the seeded random tests and the
// `ops` fuzz target; only the source of its choices differs:
//   RandomChoices  a seeded std::mt19937_64 (unit tests: reproducible by seed)
//   ByteChoices    the fuzzer's input bytes, read front to back (a crash
//                  replays from its input file alone)
// Most addresses are picked from what the model says exists (a memslot's
// guest pages, present host pages), so faults install, merges find present
// pages with equal tokens (there are three token values) and writes hit
// merged pages.
#include "mmu/base/units.hpp"
#include "mmu/check/choice_source.hpp"
#include "mmu/check/reference_model.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace hv::mmu {

namespace op_window {
inline constexpr std::uint64_t kTableSpan = 512 * kPage;
// Both windows straddle a 2 MiB boundary, so ranges cross leaf tables (split
// locks, batch cursors moving from one table to the next).
inline constexpr std::uint64_t kHost = 0x7f0000000000 + kTableSpan - 48 * kPage;
inline constexpr std::uint64_t kHostPages = 96;
inline constexpr std::uint64_t kGuest = 0x40000000 + kTableSpan - 64 * kPage;
inline constexpr std::uint64_t kGuestPages = 128;
inline constexpr std::uint32_t kVcpus = 4;

constexpr std::uint64_t host_page(std::uint64_t n) { return kHost + n * kPage; }
constexpr std::uint64_t guest_page(std::uint64_t n) { return kGuest + n * kPage; }
} // namespace op_window

template <class Choices>
class OpGenerator {
public:
    explicit OpGenerator(Choices& choices) : in_(choices) {}

    Op next(const ReferenceModel& model) {
        using namespace op_window;
        const unsigned pick = static_cast<unsigned>(below(100));
        if (pick < 25) return op::Fault{vcpu(), guest_address(model), chance(50) ? Access::Write : Access::Read};
        if (pick < 50) return op::GuestWrite{vcpu(), guest_address(model), below(3)};
        if (pick < 53) {
            const auto [start, end] = page_range(kHostPages + 8, 24);
            return op::MapAnonymous{{host_page(start), host_page(end)}, chance(80)};
        }
        if (pick < 59) {
            Memslot s{slot_id(), guest_page(below(kGuestPages)), (1 + below(32)) * kPage, host_page(below(kHostPages)),
                      chance(90)};
            if (chance(5)) s.guest_start += 0x800; // misaligned: rejected
            if (chance(3)) s.size = 0;
            return op::AddMemslot{s};
        }
        if (pick < 62) return op::AliasMemslot{slot_id(), slot_id(), guest_page(below(kGuestPages))};
        if (pick < 63) // mostly ids that exist, so slots come and go
            return op::RemoveMemslot{model.memslots().empty() || chance(30) ? slot_id() : pick_from(model.memslots()).id};
        if (pick < 67) return op::Unmap{host_range(12)};
        if (pick < 72) return op::Protect{host_range(16), chance(50)};
        if (pick < 77) return op::Migrate{host_address(model) + below(kPage)};
        if (pick < 85) return op::Merge{host_address(model), host_address(model)};
        if (pick < 91) return op::SwapOut{host_address(model)};
        if (pick < 96) return op::Age{host_range(32)};
        const auto [start, end] = page_range(kGuestPages, 24);
        return op::ZapGuestRange{guest_page(start), guest_page(end)};
    }

private:
    std::uint64_t below(std::uint64_t n) { return in_.below(n); }
    bool chance(unsigned percent) { return below(100) < percent; }
    std::uint32_t vcpu() { return static_cast<std::uint32_t>(below(op_window::kVcpus)); }
    std::uint32_t slot_id() { return static_cast<std::uint32_t>(1 + below(8)); }
    template <class Map>
    const typename Map::mapped_type& pick_from(const Map& m) {
        return std::next(m.begin(), static_cast<std::ptrdiff_t>(below(m.size())))->second;
    }
    std::uint64_t guest_address(const ReferenceModel& model) {
        using namespace op_window;
        if (model.memslots().empty() || chance(10)) return guest_page(below(kGuestPages)) + below(kPage);
        const Memslot& s = pick_from(model.memslots());
        return s.guest_start + below(s.size);
    }
    std::uint64_t host_address(const ReferenceModel& model) {
        using namespace op_window;
        if (model.host_pages().empty() || chance(15)) return host_page(below(kHostPages));
        return std::next(model.host_pages().begin(), static_cast<std::ptrdiff_t>(below(model.host_pages().size())))
            ->first;
    }
    // [start, end) in pages: mostly short, sometimes empty, sometimes the whole window.
    std::pair<std::uint64_t, std::uint64_t> page_range(std::uint64_t window, std::uint64_t max_len) {
        const std::uint64_t start = below(window);
        if (chance(5)) return {0, window};
        return {start, std::min(window, start + below(max_len + 1))};
    }
    HostRange host_range(std::uint64_t max_len) {
        const auto [start, end] = page_range(op_window::kHostPages, max_len);
        return {op_window::host_page(start), op_window::host_page(end)};
    }

    Choices& in_;
};

// Writable and read-only host memory with a hole at [88, 96) for random maps
// to fill, a writable slot over the first part, a slot over the read-only
// part, and an alias of the first slot: where every sequence starts.
inline std::vector<Op> differential_setup_ops() {
    using namespace op_window;
    return {op::MapAnonymous{{host_page(0), host_page(40)}, true},
            op::MapAnonymous{{host_page(40), host_page(56)}, false},
            op::MapAnonymous{{host_page(56), host_page(88)}, true},
            op::AddMemslot{{1, guest_page(0), 40 * kPage, host_page(0), true}},
            op::AddMemslot{{2, guest_page(64), 16 * kPage, host_page(40), true}},
            op::AliasMemslot{1, 3, guest_page(80)}};
}

// "step 12: fault(vcpu 1, 0x..., write) (expected installed, found retry)"
// and one indented line per mismatch check() reported.
inline std::string differential_report(std::size_t step, const Op& op, const StepOutcome& outcome,
                                       const std::vector<std::string>& lines) {
    std::string s = "step " + std::to_string(step) + ": " + describe(op) + " (expected " + outcome.expected +
                    ", found " + outcome.found + ")";
    for (const std::string& line : lines) s += "\n  " + line;
    return s;
}

} // namespace hv::mmu

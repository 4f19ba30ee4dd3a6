// Differential tests: seeded random operation sequences run through the real
// host address space + shadow MMU and through ReferenceModel, compared after
// every step under every lock policy x coherence policy x zap batch; small
// hand-written sequences that pin one behaviour each; and proof that the
// comparison fails when the real system changes behind the model's back.
#include "reference_model.hpp"

#include <doctest/doctest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

using namespace hv::mmu;

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kTableSpan = 512 * kPage;
// Both windows straddle a 2 MiB boundary, so ranges cross leaf tables (split
// locks, batch cursors moving from one table to the next).
constexpr std::uint64_t kHost = 0x7f0000000000 + kTableSpan - 48 * kPage;
constexpr std::uint64_t kHostPages = 96;
constexpr std::uint64_t kGuest = 0x40000000 + kTableSpan - 64 * kPage;
constexpr std::uint64_t kGuestPages = 128;
constexpr std::uint32_t kVcpus = 4;

std::uint64_t host_page(std::uint64_t n) { return kHost + n * kPage; }
std::uint64_t guest_page(std::uint64_t n) { return kGuest + n * kPage; }

// Random ops over small windows, so they collide often. Most addresses are
// picked from what the model says exists (a memslot's guest pages, present
// host pages), so faults install, merges find present pages with equal
// tokens (there are three token values) and writes hit merged pages.
class OpGenerator {
public:
    explicit OpGenerator(std::uint64_t seed) : rng_(seed) {}

    Op next(const ReferenceModel& model) {
        const unsigned pick = below(100);
        if (pick < 25) return op::Fault{vcpu(), guest_address(model), chance(50) ? Access::Write : Access::Read};
        if (pick < 50) return op::GuestWrite{vcpu(), guest_address(model), below(3)};
        if (pick < 53) {
            const auto [start, end] = page_range(kHostPages + 8, 24);
            return op::MapAnonymous{{host_page(start), host_page(end)}, chance(80)};
        }
        if (pick < 59) {
            Memslot s{slot_id(), guest_page(below(kGuestPages)), (1 + below(32)) * kPage, host_page(below(kHostPages)), chance(90)};
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
    std::uint64_t below(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }
    bool chance(unsigned percent) { return below(100) < percent; }
    std::uint32_t vcpu() { return static_cast<std::uint32_t>(below(kVcpus)); }
    std::uint32_t slot_id() { return static_cast<std::uint32_t>(1 + below(8)); }
    template <class Map>
    const typename Map::mapped_type& pick_from(const Map& m) {
        return std::next(m.begin(), static_cast<std::ptrdiff_t>(below(m.size())))->second;
    }
    std::uint64_t guest_address(const ReferenceModel& model) {
        if (model.memslots().empty() || chance(10)) return guest_page(below(kGuestPages)) + below(kPage);
        const Memslot& s = pick_from(model.memslots());
        return s.guest_start + below(s.size);
    }
    std::uint64_t host_address(const ReferenceModel& model) {
        if (model.host_pages().empty() || chance(15)) return host_page(below(kHostPages));
        return std::next(model.host_pages().begin(), static_cast<std::ptrdiff_t>(below(model.host_pages().size())))->first;
    }
    // [start, end) in pages: mostly short, sometimes empty, sometimes the whole window.
    std::pair<std::uint64_t, std::uint64_t> page_range(std::uint64_t window, std::uint64_t max_len) {
        const std::uint64_t start = below(window);
        if (chance(5)) return {0, window};
        return {start, std::min(window, start + below(max_len + 1))};
    }
    HostRange host_range(std::uint64_t max_len) {
        const auto [start, end] = page_range(kHostPages, max_len);
        return {host_page(start), host_page(end)};
    }
    std::mt19937_64 rng_;
};

// Writable and read-only host memory with a hole at [88, 96) for random maps
// to fill, a writable slot over the first part, a slot over the read-only
// part, and an alias of the first slot.
std::vector<Op> setup_ops() {
    return {op::MapAnonymous{{host_page(0), host_page(40)}, true},
            op::MapAnonymous{{host_page(40), host_page(56)}, false},
            op::MapAnonymous{{host_page(56), host_page(88)}, true},
            op::AddMemslot{{1, guest_page(0), 40 * kPage, host_page(0), true}},
            op::AddMemslot{{2, guest_page(64), 16 * kPage, host_page(40), true}},
            op::AliasMemslot{1, 3, guest_page(80)}};
}

std::string report(std::size_t step, const Op& op, const StepOutcome& outcome, const std::vector<std::string>& lines) {
    std::string s = "step " + std::to_string(step) + ": " + describe(op) + " (expected " + outcome.expected + ", found " +
                    outcome.found + ")";
    for (const std::string& line : lines) s += "\n  " + line;
    return s;
}

// One rig + model pair. step() applies an op to both and compares them,
// failing the test with every mismatch line; it returns the real outcome.
struct Differential {
    DifferentialRig rig;
    ReferenceModel model;
    std::size_t steps = 0;
    bool failed = false;
    explicit Differential(ShadowConfig config, bool page_at_a_time = false)
        : rig(config, page_at_a_time), model(config, page_at_a_time) {}
    std::string step(const Op& op) {
        const StepOutcome outcome = apply_both(rig, model, op);
        const std::vector<std::string> lines = check(rig, model, &outcome);
        if (!lines.empty()) {
            FAIL_CHECK(report(steps, op, outcome, lines));
            failed = true;
        }
        ++steps;
        return outcome.found;
    }
    // The frame host page n maps now (the test fails when it maps none).
    Pfn frame(std::uint64_t n) {
        const auto t = rig.host.lookup(host_page(n));
        REQUIRE(t);
        return t->pfn;
    }
};

ShadowConfig config(LockPolicy lock, CoherencePolicy coherence, std::size_t batch) {
    return {lock, coherence, batch, kVcpus};
}

// Runs fn(config) under every coherence policy x batch of one lock policy,
// or of every lock policy, each failure naming its configuration.
template <class Fn>
void for_each_config(LockPolicy lock, Fn&& fn) {
    for (CoherencePolicy coherence : {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive})
        for (std::size_t batch : {std::size_t{1}, std::size_t{64}, std::size_t{512}, std::size_t{0}}) {
            const std::string policy = std::string(to_string(lock)) + "/" + to_string(coherence) + "/batch " +
                                       std::to_string(batch);
            CAPTURE(policy);
            fn(config(lock, coherence, batch));
        }
}

template <class Fn>
void for_each_config(Fn&& fn) {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split}) for_each_config(lock, fn);
}

// Eight writable host pages behind one writable memslot.
void map_small_system(Differential& d) {
    CHECK(d.step(op::MapAnonymous{{host_page(0), host_page(8)}, true}) == "accepted");
    CHECK(d.step(op::AddMemslot{{1, guest_page(0), 8 * kPage, host_page(0), true}}) == "accepted");
}

const std::string kWrote = "fault installed, wrote";

// Random sequences under every coherence policy and batch size of one lock
// policy (one test case per lock policy, so that ctest runs them side by side).
void check_random_sequences(LockPolicy lock, std::uint64_t seed) {
    constexpr std::size_t kRunsPerConfig = 2;
    constexpr std::size_t kSteps = 2000;
    std::map<std::string, std::size_t> outcomes; // "op kind: outcome" -> count, to show the ops did something
    for_each_config(lock, [&](ShadowConfig c) {
        for (std::size_t run = 0; run < kRunsPerConfig; ++run, ++seed) { // each configuration runs its own sequences
            const bool page_at_a_time = run % 2 == 1; // the host's 2008 invalidate_page shape
            CAPTURE(seed);
            CAPTURE(page_at_a_time);
            Differential d(c, page_at_a_time);
            OpGenerator gen(seed);
            for (const Op& op : setup_ops()) d.step(op);
            for (std::size_t i = 0; i < kSteps && !d.failed; ++i) { // after a divergence, steps only repeat it
                const Op op = gen.next(d.model);
                ++outcomes[std::string(name(op)) + ": " + d.step(op)];
            }
        }
    });
    std::string seen;
    for (const auto& [what, n] : outcomes) seen += what + " x" + std::to_string(n) + "\n";
    INFO(seen);
    // Every interesting path was taken somewhere, or the agreement above says little.
    for (const char* what : {"merge: true", "migrate: true", "swap_out: true", "age: true", "age: false",
                             "fault: retry", "fault: refused", "fault: no-memslot", "add_memslot: rejected",
                             "alias_memslot: accepted", "remove_memslot: accepted", "remove_memslot: rejected",
                             "map_anonymous: accepted",
                             "guest_write: fault installed, wrote", "guest_write: wrote", "guest_write: fault refused, no write",
                             "guest_write: fault retry, fault installed, wrote"})
        CHECK_MESSAGE(outcomes[what] > 0, std::string(what));
}

} // namespace

TEST_CASE("differential: random op sequences agree with the reference model, global lock, every coherence and batch") {
    check_random_sequences(LockPolicy::Global, 0x5eed0000);
}
TEST_CASE("differential: random op sequences agree with the reference model, rw lock, every coherence and batch") {
    check_random_sequences(LockPolicy::Rw, 0x5eed0100);
}
TEST_CASE("differential: random op sequences agree with the reference model, split lock, every coherence and batch") {
    check_random_sequences(LockPolicy::Split, 0x5eed0200);
}

// The host's copy-on-write break is an invalidation of the faulting page, so
// under Seq the fault that caused it retries once (as KVM does); the other
// policies install at once. The sharer keeps the old contents either way.
TEST_CASE("differential: a guest write to a merged page breaks the copy-on-write, unless the range is read-only") {
    for_each_config([](ShadowConfig c) {
        Differential d(c);
        map_small_system(d);
        const std::string cow_write = c.coherence == CoherencePolicy::Seq ? "fault retry, " + kWrote : kWrote;
        CHECK(d.step(op::GuestWrite{0, guest_page(0), 5}) == kWrote);
        CHECK(d.step(op::GuestWrite{1, guest_page(1), 5}) == kWrote);
        CHECK(d.step(op::Merge{host_page(0), host_page(1)}) == "true");
        CHECK(d.step(op::Fault{2, guest_page(0), Access::Read}) == "installed");
        CHECK(d.step(op::Fault{3, guest_page(1), Access::Read}) == "installed");
        CHECK(d.frame(0) == d.frame(1));
        // protect() wins over copy-on-write: no break in a read-only range.
        CHECK(d.step(op::Protect{{host_page(0), host_page(2)}, false}) == "0 pages");
        CHECK(d.step(op::GuestWrite{0, guest_page(1), 9}) == "fault refused, no write");
        CHECK(d.frame(0) == d.frame(1));
        CHECK(d.step(op::Protect{{host_page(0), host_page(2)}, true}) == "0 pages"); // merged pages stay read-only
        CHECK(d.step(op::GuestWrite{0, guest_page(1), 9}) == cow_write);
        CHECK(d.frame(0) != d.frame(1));
        CHECK(d.rig.read_token(d.frame(0)) == 5);
        CHECK(d.rig.read_token(d.frame(1)) == 9);
        CHECK(d.step(op::GuestWrite{0, guest_page(0), 6}) == cow_write); // the last sharer copies too
    });
}

TEST_CASE("differential: unmap then a fault reads a zero-filled page") {
    for_each_config([](ShadowConfig c) {
        Differential d(c);
        map_small_system(d);
        CHECK(d.step(op::GuestWrite{0, guest_page(3), 7}) == kWrote);
        CHECK(d.step(op::Unmap{{host_page(2), host_page(5)}}) == "1 pages");
        CHECK(d.rig.shadow.entry(guest_page(3)) == 0);
        CHECK(d.step(op::Fault{1, guest_page(3), Access::Read}) == "installed");
        CHECK(d.rig.read_token(d.frame(3)) == 0);
    });
}

TEST_CASE("differential: swap out then a fault reads the old token") {
    for_each_config([](ShadowConfig c) {
        Differential d(c);
        map_small_system(d);
        CHECK(d.step(op::GuestWrite{0, guest_page(4), 7}) == kWrote);
        CHECK(d.step(op::SwapOut{host_page(4)}) == "true");
        CHECK(d.step(op::SwapOut{host_page(4)}) == "false");
        CHECK(d.rig.shadow.entry(guest_page(4)) == 0);
        CHECK(d.step(op::Fault{1, guest_page(4), Access::Write}) == "installed");
        CHECK(d.rig.read_token(d.frame(4)) == 7);
        CHECK(d.rig.host.swap_slots_in_use() == 0);
    });
}

TEST_CASE("differential: alias slots see the same token, and a migration moves both") {
    for_each_config([](ShadowConfig c) {
        Differential d(c);
        map_small_system(d);
        CHECK(d.step(op::AliasMemslot{1, 2, guest_page(64)}) == "accepted");
        CHECK(d.step(op::GuestWrite{0, guest_page(64 + 2), 11}) == kWrote);
        CHECK(d.step(op::Fault{1, guest_page(2), Access::Read}) == "installed");
        const Pfn before = d.frame(2);
        CHECK(d.step(op::Migrate{host_page(2)}) == "true");
        CHECK(d.step(op::Fault{1, guest_page(2), Access::Read}) == "installed");
        CHECK(d.step(op::Fault{1, guest_page(64 + 2), Access::Write}) == "installed");
        CHECK(d.frame(2) != before);
        CHECK(d.rig.read_token(d.frame(2)) == 11);
        CHECK(d.step(op::RemoveMemslot{2}) == "accepted"); // zaps the alias's entries only
        CHECK(d.rig.shadow.entry(guest_page(2)) != 0);
    });
}

// Every coherence policy marks the host PTE accessed on a fault, PtLock's
// (which takes a usable PTE under its lock without a host fault) included.
TEST_CASE("differential: age reports pages accessed since the last age, under every coherence policy") {
    for_each_config([](ShadowConfig c) {
        Differential d(c);
        map_small_system(d);
        CHECK(d.step(op::Fault{0, guest_page(0), Access::Read}) == "installed");
        CHECK(d.step(op::Age{{host_page(0), host_page(8)}}) == "true");
        CHECK(d.step(op::Age{{host_page(0), host_page(8)}}) == "false");
        CHECK(d.step(op::Fault{0, guest_page(0), Access::Read}) == "installed");
        CHECK(d.step(op::Age{{host_page(0), host_page(8)}}) == "true");
        CHECK(d.step(op::ZapGuestRange{guest_page(0), guest_page(8)}) == "1 pages");
        CHECK(d.step(op::Fault{0, guest_page(0), Access::Read}) == "installed");
        CHECK(d.step(op::Age{{host_page(0), host_page(1)}}) == "true");
    });
}

// Removing an unknown slot once left the invalidation in-progress count
// raised (the id was looked up after the count went up, and the throw skipped
// the decrement), so every later fault returned Retry.
TEST_CASE("differential: removing an unknown memslot is rejected and leaves faults working") {
    for_each_config([](ShadowConfig c) {
        Differential d(c);
        map_small_system(d);
        CHECK(d.step(op::RemoveMemslot{7}) == "rejected");
        CHECK(d.step(op::Fault{0, guest_page(0), Access::Write}) == "installed");
        CHECK(d.step(op::AliasMemslot{7, 8, guest_page(64)}) == "rejected");
        CHECK(d.step(op::Fault{0, guest_page(1), Access::Read}) == "installed");
    });
}

// The comparison must be able to fail: change the real system behind the
// model's back and it reports what differs.
TEST_CASE("differential: the checker reports changes made behind the model's back") {
    auto has = [](const std::vector<std::string>& lines, const std::string& needle) {
        for (const std::string& l : lines)
            if (l.find(needle) != std::string::npos) return true;
        return false;
    };
    Differential d(config(LockPolicy::Split, CoherencePolicy::Seq, 64));
    map_small_system(d);
    CHECK(d.step(op::GuestWrite{0, guest_page(0), 5}) == kWrote);
    CHECK(d.step(op::GuestWrite{0, guest_page(1), 6}) == kWrote);
    REQUIRE(check(d.rig, d.model).empty());

    SUBCASE("a frame written directly") {
        d.rig.write_token(d.frame(0), 99);
        const auto lines = check(d.rig, d.model);
        CHECK(has(lines, "host page " + hex(host_page(0)) + ": expected token 5, found 99"));
        CHECK(has(lines, "shadow entry for guest " + hex(guest_page(0)) + ": expected to read token 5, found 99"));
    }
    SUBCASE("a host protect the model did not see") {
        d.rig.host.protect({host_page(1), host_page(2)}, false);
        const auto lines = check(d.rig, d.model);
        CHECK(has(lines, "host page " + hex(host_page(1)) + ": expected writable, found read-only"));
        CHECK(has(lines, "shadow entry for guest " + hex(guest_page(1)) + ": expected present, found none"));
    }
    SUBCASE("a memslot the model did not see") {
        d.rig.shadow.add_memslot({9, guest_page(100), kPage, host_page(0), true});
        CHECK(has(check(d.rig, d.model), "memslots: expected"));
    }
    SUBCASE("an outcome that differs") {
        const StepOutcome wrong{"true", "false"};
        CHECK(has(check(d.rig, d.model, &wrong), "outcome: expected true, found false"));
    }
}

// In page-at-a-time mode the host invalidates only the pages it changed: a
// protect that changes nothing keeps the entries, and so does a migration
// of a merged page.
TEST_CASE("differential: page-at-a-time invalidation zaps only the pages the host changed") {
    for_each_config([](ShadowConfig c) {
        Differential d(c, true);
        map_small_system(d);
        CHECK(d.step(op::GuestWrite{0, guest_page(0), 1}) == kWrote);
        CHECK(d.step(op::Fault{0, guest_page(1), Access::Write}) == "installed");
        CHECK(d.step(op::Protect{{host_page(0), host_page(8)}, true}) == "0 pages");
        CHECK(d.rig.shadow.entry(guest_page(0)) != 0);
        CHECK(d.step(op::Protect{{host_page(1), host_page(2)}, false}) == "1 pages");
        CHECK(d.rig.shadow.entry(guest_page(0)) != 0);
        CHECK(d.rig.shadow.entry(guest_page(1)) == 0);
        CHECK(d.step(op::Migrate{host_page(5)}) == "false"); // absent: nothing changed
    });
}

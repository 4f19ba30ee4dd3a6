// Differential tests: seeded random operation sequences run through the real
// host address space + shadow MMU and through ReferenceModel, compared after
// every step under every lock policy x coherence policy x zap batch; small
// hand-written sequences that pin one behaviour each; and proof that the
// comparison fails when the real system changes behind the model's back.
#include "mmu/check/op_generator.hpp"
#include "mmu/check/reference_model.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

using namespace hv::mmu;

namespace {

using op_window::guest_page;
using op_window::host_page;
using op_window::kVcpus;
using OpGen = OpGenerator<RandomChoices>;

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
            FAIL_CHECK(differential_report(steps, op, outcome, lines));
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
            RandomChoices choices(seed);
            OpGen gen(choices);
            for (const Op& op : differential_setup_ops()) d.step(op);
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

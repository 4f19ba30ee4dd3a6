// hv::mmu::NotifierChain under stress: invalidations from many threads race
// subscribe/unsubscribe churn; subscribers check from their side that no
// call arrives after unsubscribe returned and every start gets its end.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "mmu/host/notifier_chain.hpp"

using namespace std::chrono_literals;
using hv::mmu::HostRange;
using hv::mmu::InvalidateEvent;
using hv::mmu::MmuNotifier;
using hv::mmu::NotifierChain;
using hv::mmu::StartResult;

namespace {

// Small per-thread PRNG: the stress threads must not share one.
std::uint64_t next_random() {
    thread_local std::uint64_t state =
        0x9e3779b97f4a7c15ull ^ std::hash<std::thread::id>{}(std::this_thread::get_id());
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// Checks the chain's guarantees from the subscriber's side. Violations are
// counted (doctest assertions stay on the main thread).
class StressSub final : public MmuNotifier {
public:
    explicit StressSub(std::atomic<int>& violations) : violations_(violations) {}

    std::atomic<bool> gone{false}; // set when unsubscribe() returned
    std::atomic<int> in_flight{0};
    std::atomic<std::uint64_t> start_calls{0}, ok_starts{0}, ends{0}, refusals{0}, other_calls{0};

    StartResult invalidate_range_start(HostRange, InvalidateEvent, bool blockable) override {
        check_alive();
        start_calls.fetch_add(1, std::memory_order_relaxed);
        if (!blockable && next_random() % 8 == 0) {
            refusals.fetch_add(1, std::memory_order_relaxed);
            return StartResult::TryAgain; // no end may follow
        }
        in_flight.fetch_add(1, std::memory_order_relaxed);
        ok_starts.fetch_add(1, std::memory_order_relaxed);
        return StartResult::Ok;
    }
    void invalidate_range_end(HostRange, InvalidateEvent) noexcept override {
        check_alive();
        if (in_flight.fetch_sub(1, std::memory_order_relaxed) <= 0) violations_.fetch_add(1); // end without start
        ends.fetch_add(1, std::memory_order_relaxed);
    }
    void invalidate_page(std::uint64_t, InvalidateEvent) override { other(); }
    bool clear_young(HostRange) override { return other(); }
    bool test_young(HostRange) override { return other(); }
    void release() override { violations_.fetch_add(1); } // never released in the stress test

private:
    void check_alive() {
        if (gone.load(std::memory_order_relaxed)) violations_.fetch_add(1);
    }
    bool other() {
        check_alive();
        other_calls.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    std::atomic<int>& violations_;
};

} // namespace

TEST_CASE("NotifierChain: stress: invalidations race subscribe/unsubscribe") {
    NotifierChain chain;
    std::atomic<int> violations{0};
    std::atomic<bool> stop{false};

    // Totals over every subscriber that ever existed, to cross-check the
    // chain's counters.
    std::atomic<std::uint64_t> sum_start_calls{0}, sum_ends{0}, sum_refusals{0};
    std::atomic<int> unbalanced{0}, busy_after_unsubscribe{0};
    auto retire = [&](StressSub& s) {
        chain.unsubscribe(s);
        s.gone = true;
        // Every invalidation that could still hold s has ended, so has
        // delivered the ends for its starts.
        if (s.in_flight.load() != 0) busy_after_unsubscribe.fetch_add(1);
        if (s.ok_starts.load() != s.ends.load()) unbalanced.fetch_add(1);
        sum_start_calls += s.start_calls.load();
        sum_ends += s.ends.load();
        sum_refusals += s.refusals.load();
    };

    StressSub permanent(violations);
    chain.subscribe(permanent);

    std::atomic<std::uint64_t> begun{0}, refused{0}, churn{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            std::uint64_t local_begun = 0, local_refused = 0;
            for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                const HostRange r{(i % 64) << 12, ((i % 64) + 1 + t) << 12};
                const bool blockable = (i + t) % 2 == 0;
                auto inv = chain.begin(r, InvalidateEvent::Unmap, blockable);
                if (!inv) {
                    ++local_refused;
                    continue;
                }
                ++local_begun;
                if (i % 16 == 0) std::this_thread::yield(); // hold a snapshot across a reschedule
                if (i % 32 == 0) chain.invalidate_page(r.start, InvalidateEvent::Unmap);
                if (i % 32 == 16) (void)chain.clear_young(r);
            }
            begun += local_begun;
            refused += local_refused;
        });
    }
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&] {
            std::vector<std::unique_ptr<StressSub>> slots(4);
            std::uint64_t local_churn = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                auto& slot = slots[next_random() % slots.size()];
                if (slot) {
                    retire(*slot);
                    slot.reset(); // destroyed right away: ASan catches a late call
                } else {
                    slot = std::make_unique<StressSub>(violations);
                    chain.subscribe(*slot);
                }
                ++local_churn;
            }
            for (auto& slot : slots)
                if (slot) retire(*slot);
            churn += local_churn;
        });
    }
    std::this_thread::sleep_for(400ms);
    stop = true;
    for (auto& th : threads) th.join();
    retire(permanent);

    CHECK(violations.load() == 0);
    CHECK(unbalanced.load() == 0);
    CHECK(busy_after_unsubscribe.load() == 0);
    CHECK(chain.subscriber_count() == 0);
    // Both sides made real progress, so the races were exercised.
    CHECK(begun.load() > 1000);
    CHECK(refused.load() > 0);
    CHECK(churn.load() > 20);
    CHECK(permanent.ok_starts.load() > 0);
    MESSAGE("stress: " << begun.load() << " invalidations, " << refused.load() << " refused, " << churn.load()
                       << " subscribe/unsubscribe");

    const auto n = chain.counters();
    CHECK(n.starts == sum_start_calls.load());
    CHECK(n.ends == sum_ends.load());
    CHECK(n.try_again == sum_refusals.load());
    CHECK(n.try_again_ignored == 0); // subscribers only refuse non-blockable starts
    CHECK(n.subscribes == n.unsubscribes);
    CHECK(n.deferred_waits == 0);
}

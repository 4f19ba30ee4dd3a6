// The zap's lock hand-over (hand_over_mutex.hpp): a writer that releases
// the lock while someone waits returns only once a waiter got in, so the
// waiter runs between two batches instead of after the whole zap; without
// a waiter it does not wait. The limits here are long (10 s) so that a slow
// machine cannot fail the test: what is checked is the order of events,
// not a time.
#include "mmu/sync/hand_over_mutex.hpp"
#include "mmu/sync/reader_slot_lock.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

using namespace hv::mmu;

namespace {
constexpr std::chrono::microseconds kLong{10'000'000};
} // namespace

TEST_CASE("HandOverMutex: a waiter gets the mutex before the releasing holder returns") {
    HandOverMutex m;
    std::atomic<bool> waiter_was_in{false};
    m.lock();
    std::thread waiter([&] {
        m.lock();
        waiter_was_in = true;
        m.unlock();
    });
    while (m.waiting() == 0) std::this_thread::yield(); // the waiter is inside lock()
    m.unlock_and_hand_over(kLong);
    CHECK(m.admitted() == 1);
    // The holder takes it again, as the next zap batch would: the waiter
    // ran in between.
    m.lock();
    CHECK(waiter_was_in.load());
    m.unlock();
    waiter.join();
}

TEST_CASE("HandOverMutex: without a waiter the holder neither waits nor counts an admission") {
    HandOverMutex m;
    for (int i = 0; i < 1000; ++i) {
        m.lock();
        m.unlock_and_hand_over(kLong); // would take 1000 x 10 s if it waited
    }
    CHECK(m.admitted() == 0);
    CHECK(m.waiting() == 0);
    CHECK(m.try_lock());
    m.unlock();
}

TEST_CASE("ReaderSlotLock: a reader waiting for the writer gets in before the writer's hand-over returns, in both modes") {
    for (const auto mode : {ReaderSlotLock::Mode::Symmetric, ReaderSlotLock::Mode::RareWriters}) {
        CAPTURE(static_cast<int>(mode));
        ReaderSlotLock lock(2, mode);
        std::atomic<bool> reader_was_in{false};
        lock.lock();
        std::thread reader([&] {
            ReaderSlotLock::SharedGuard g(lock, 1);
            reader_was_in = true;
        });
        while (!lock.reader_sleeps()) std::this_thread::yield();
        lock.unlock_and_hand_over(kLong);
        CHECK(lock.admitted() == 1);
        lock.lock(); // the next batch: after the reader, which has left again
        CHECK(reader_was_in.load());
        lock.unlock_and_hand_over(kLong); // nobody waits now: returns at once
        CHECK(lock.admitted() == 1);
        reader.join();
    }
}

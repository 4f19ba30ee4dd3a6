#pragma once
// Shared by the hv::mmu::NotifierChain tests (test_mmu_notifier_chain_*.cpp):
// a Recorder subscriber that logs its calls as "<name>.<call>" in a shared,
// ordered Log, with answers and hooks set by the test.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "mmu/host/notifier_chain.hpp"

namespace hv::mmu::test::notifier_chain {

// A shared, ordered log of "<name>.<call>" entries.
class Log {
public:
    void add(std::string entry) {
        std::lock_guard lock(mutex_);
        entries_.push_back(std::move(entry));
    }
    std::vector<std::string> take() {
        std::lock_guard lock(mutex_);
        return std::exchange(entries_, {});
    }

private:
    std::mutex mutex_;
    std::vector<std::string> entries_;
};

// Records its calls in a Log; answers and hooks are set by the test.
class Recorder final : public MmuNotifier {
public:
    Recorder(std::string name, Log& log) : name_(std::move(name)), log_(log) {}

    StartResult start_answer = StartResult::Ok;
    bool young = false;
    std::function<void()> on_start, on_end, on_release;
    HostRange last_range{};
    InvalidateEvent last_event = InvalidateEvent::Clear;
    bool last_blockable = false;
    int releases = 0;

    StartResult invalidate_range_start(HostRange range, InvalidateEvent event, bool blockable) override {
        log_.add(name_ + ".start");
        last_range = range;
        last_event = event;
        last_blockable = blockable;
        if (on_start) on_start();
        if (start_answer == StartResult::Ok || blockable) open_.push_back({range, event});
        return start_answer;
    }
    void invalidate_range_end(HostRange range, InvalidateEvent event) noexcept override {
        log_.add(name_ + ".end");
        // Each end closes one open start with the same range and event.
        auto it = std::find_if(open_.begin(), open_.end(),
                               [&](const Open& o) { return o.range == range && o.event == event; });
        CHECK(it != open_.end());
        if (it != open_.end()) open_.erase(it);
        if (on_end) on_end();
    }
    std::size_t open_starts() const { return open_.size(); }
    void invalidate_page(std::uint64_t host_address, InvalidateEvent) override {
        log_.add(name_ + ".page@" + std::to_string(host_address));
    }
    bool clear_young(HostRange) override {
        log_.add(name_ + ".clear_young");
        return young;
    }
    bool test_young(HostRange) override {
        log_.add(name_ + ".test_young");
        return young;
    }
    void release() override {
        log_.add(name_ + ".release");
        ++releases;
        if (on_release) on_release();
    }

private:
    struct Open {
        HostRange range;
        InvalidateEvent event;
    };
    std::string name_;
    Log& log_;
    std::vector<Open> open_; // starts without their end yet
};

using Entries = std::vector<std::string>;
inline constexpr HostRange range_a{0x10000, 0x14000};

} // namespace hv::mmu::test::notifier_chain

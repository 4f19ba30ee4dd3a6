// HostAddressSpace: host faults and each host operation, with the exact
// notifier sequence it produces (recorded by a subscriber).
#include "mmu/base/units.hpp"
#include "mmu/host/host_address_space.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace hv::mmu;

namespace {
constexpr std::uint64_t kBase = 0x40000000; // 1 GiB: away from address 0 on purpose

std::string hexs(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(v));
    return b;
}

// Records every callback as one line, e.g. "start unmap 40000000-40002000".
class Recorder final : public MmuNotifier {
public:
    std::vector<std::string> log;
    bool young_answer = false;
    StartResult invalidate_range_start(HostRange r, InvalidateEvent e, bool) override {
        log.push_back(std::string("start ") + to_string(e) + " " + hexs(r.start) + "-" + hexs(r.end));
        return StartResult::Ok;
    }
    void invalidate_range_end(HostRange r, InvalidateEvent e) noexcept override {
        log.push_back(std::string("end ") + to_string(e) + " " + hexs(r.start) + "-" + hexs(r.end));
    }
    void invalidate_page(std::uint64_t a, InvalidateEvent e) override {
        log.push_back(std::string("page ") + to_string(e) + " " + hexs(a));
    }
    bool clear_young(HostRange r) override {
        log.push_back("clear_young " + hexs(r.start) + "-" + hexs(r.end));
        return young_answer;
    }
    bool test_young(HostRange r) override {
        log.push_back("test_young " + hexs(r.start) + "-" + hexs(r.end));
        return young_answer;
    }
    void release() override { log.push_back("release"); }
};

struct Fixture {
    FrameSpace frames{256};
    HostAddressSpace host{frames};
    Recorder rec;
    Fixture(bool writable = true) {
        host.map_anonymous({kBase, kBase + 64 * kPage}, writable);
        host.notifiers().subscribe(rec);
    }
    ~Fixture() { host.notifiers().unsubscribe(rec); }
    std::uint8_t* bytes(std::uint64_t a) {
        auto t = host.lookup(a);
        REQUIRE(t);
        return frames.bytes(t->pfn).data();
    }
};

std::string ev(const char* what, InvalidateEvent e, std::uint64_t s, std::uint64_t n) {
    return std::string(what) + " " + to_string(e) + " " + hexs(s) + "-" + hexs(s + n * kPage);
}

} // namespace

TEST_CASE("host fault: demand-zero on first touch, same frame afterwards, no notifier calls") {
    Fixture f;
    auto r1 = f.host.fault(kBase + 5 * kPage + 123, Access::Read);
    REQUIRE(r1.status == HostFaultStatus::Mapped);
    CHECK(r1.translation.writable);
    const auto page = f.frames.bytes(r1.translation.pfn);
    CHECK(std::all_of(page.begin(), page.end(), [](std::uint8_t b) { return b == 0; }));
    auto r2 = f.host.fault(kBase + 5 * kPage, Access::Write);
    CHECK(r2.translation.pfn == r1.translation.pfn);
    CHECK(f.rec.log.empty());
    CHECK(f.host.counters().zero_fills == 1);
}

TEST_CASE("host fault: a present page already accessed (and dirty, for a write) answers without its PT lock") {
    Fixture f;
    const std::uint64_t a = kBase + 3 * kPage;
    REQUIRE(f.host.fault(a, Access::Read, 0).status == HostFaultStatus::Mapped); // zero fill: accessed, clean
    const auto locks = [&] { return f.host.counters().pt_lock_acquisitions; };
    std::uint64_t before = locks();
    HostFaultResult r = f.host.fault(a, Access::Read, 0);
    CHECK(r.status == HostFaultStatus::Mapped);
    CHECK(r.cost.locks == 0);
    CHECK(locks() == before);
    // A write must set the dirty bit: under the PT lock, once.
    r = f.host.fault(a, Access::Write, 0);
    CHECK(r.status == HostFaultStatus::Mapped);
    CHECK(r.cost.locks == 1);
    CHECK(locks() == before + 1);
    r = f.host.fault(a, Access::Write, 0);
    CHECK(r.cost.locks == 0);
    CHECK(locks() == before + 1);
    // Aging clears the accessed bit: the next fault takes the lock to set it again.
    REQUIRE(f.host.age({a, a + kPage}));
    before = locks();
    r = f.host.fault(a, Access::Read, 0);
    CHECK(r.cost.locks == 1);
    bool accessed = false;
    f.host.for_each_present({a, a + kPage}, [&](std::uint64_t, std::uint64_t pte) { accessed = X86PteFormat::accessed(pte); });
    CHECK(accessed);
    // A read-only page (protect) still refuses a write, under the lock.
    f.host.protect({a, a + kPage}, false);
    r = f.host.fault(a, Access::Write, 0);
    CHECK(r.status == HostFaultStatus::ReadOnly);
}

TEST_CASE("host fault: outside every mapping, and writes to a read-only mapping") {
    Fixture f;
    CHECK(f.host.fault(kBase - kPage, Access::Read).status == HostFaultStatus::NoMapping);
    CHECK(f.host.fault(kBase + 64 * kPage, Access::Read).status == HostFaultStatus::NoMapping);
    f.host.map_anonymous({kBase + 128 * kPage, kBase + 129 * kPage}, false);
    CHECK(f.host.fault(kBase + 128 * kPage, Access::Write).status == HostFaultStatus::ReadOnly);
    auto r = f.host.fault(kBase + 128 * kPage, Access::Read);
    CHECK(r.status == HostFaultStatus::Mapped);
    CHECK_FALSE(r.translation.writable);
}

TEST_CASE("map_anonymous rejects unaligned, empty, overlapping and too-high ranges") {
    Fixture f;
    CHECK_THROWS_AS(f.host.map_anonymous({kBase + 1, kBase + kPage}, true), std::invalid_argument);
    CHECK_THROWS_AS(f.host.map_anonymous({kBase + 100 * kPage, kBase + 100 * kPage}, true), std::invalid_argument);
    CHECK_THROWS_AS(f.host.map_anonymous({kBase + 63 * kPage, kBase + 65 * kPage}, true), std::invalid_argument);
    CHECK_THROWS_AS(f.host.map_anonymous({kBase - kPage, kBase + kPage}, true), std::invalid_argument);
    CHECK_THROWS_AS(f.host.map_anonymous({1ull << 47, (1ull << 47) + kPage}, true), std::invalid_argument);
    CHECK_NOTHROW(f.host.map_anonymous({kBase + 64 * kPage, kBase + 65 * kPage}, true)); // adjacent is fine
}

TEST_CASE("unmap: start, clear, end, then frames freed, then next touch is zero again") {
    Fixture f;
    for (int i = 0; i < 4; ++i) {
        REQUIRE(f.host.fault(kBase + i * kPage, Access::Write).status == HostFaultStatus::Mapped);
        f.bytes(kBase + i * kPage)[0] = 0xab;
    }
    const auto in_use = f.frames.counters().in_use;
    CHECK(f.host.unmap({kBase + kPage, kBase + 3 * kPage}) == 2);
    CHECK(f.rec.log == std::vector<std::string>{ev("start", InvalidateEvent::Unmap, kBase + kPage, 2),
                                                ev("end", InvalidateEvent::Unmap, kBase + kPage, 2)});
    CHECK(f.frames.counters().in_use == in_use - 2);
    CHECK_FALSE(f.host.lookup(kBase + kPage));
    CHECK(f.host.lookup(kBase));
    REQUIRE(f.host.fault(kBase + kPage, Access::Read).status == HostFaultStatus::Mapped);
    CHECK(f.bytes(kBase + kPage)[0] == 0);
    CHECK(f.bytes(kBase)[0] == 0xab);
}

TEST_CASE("protect: read-only then writable again, then merged pages stay read-only") {
    Fixture f;
    REQUIRE(f.host.fault(kBase, Access::Write).status == HostFaultStatus::Mapped);
    CHECK(f.host.protect({kBase, kBase + 2 * kPage}, false) == 1);
    CHECK(f.rec.log == std::vector<std::string>{ev("start", InvalidateEvent::Protect, kBase, 2),
                                                ev("end", InvalidateEvent::Protect, kBase, 2)});
    CHECK_FALSE(f.host.lookup(kBase)->writable);
    CHECK(f.host.fault(kBase, Access::Write).status == HostFaultStatus::ReadOnly);
    // A page first touched after protect() is read-only too.
    CHECK(f.host.fault(kBase + kPage, Access::Write).status == HostFaultStatus::ReadOnly);
    CHECK(f.host.fault(kBase + 2 * kPage, Access::Write).status == HostFaultStatus::Mapped);
    CHECK(f.host.protect({kBase, kBase + 2 * kPage}, true) == 1);
    CHECK(f.host.fault(kBase, Access::Write).status == HostFaultStatus::Mapped);
}

TEST_CASE("migrate: contents move to a new frame under start/end, then the old frame is freed") {
    Fixture f;
    REQUIRE(f.host.fault(kBase, Access::Write).status == HostFaultStatus::Mapped);
    const Pfn before = f.host.lookup(kBase)->pfn;
    std::memset(f.bytes(kBase), 0x5c, kPage);
    const auto in_use = f.frames.counters().in_use;
    CHECK(f.host.migrate(kBase));
    const Pfn after = f.host.lookup(kBase)->pfn;
    CHECK(after != before);
    CHECK(f.bytes(kBase)[kPage - 1] == 0x5c);
    CHECK(f.frames.counters().in_use == in_use);
    CHECK(f.rec.log == std::vector<std::string>{ev("start", InvalidateEvent::Migrate, kBase, 1),
                                                ev("end", InvalidateEvent::Migrate, kBase, 1)});
    CHECK_FALSE(f.host.migrate(kBase + kPage)); // not present
}

TEST_CASE("merge: identical pages share one read-only frame, then a write breaks the sharing") {
    Fixture f;
    const std::uint64_t a = kBase, b = kBase + 7 * kPage;
    REQUIRE(f.host.fault(a, Access::Write).status == HostFaultStatus::Mapped);
    REQUIRE(f.host.fault(b, Access::Write).status == HostFaultStatus::Mapped);
    std::memset(f.bytes(a), 0x11, kPage);
    std::memset(f.bytes(b), 0x11, kPage);
    const auto in_use = f.frames.counters().in_use;
    REQUIRE(f.host.merge(a, b));
    CHECK(f.rec.log == std::vector<std::string>{ev("start", InvalidateEvent::Merge, a, 1),
                                                ev("start", InvalidateEvent::Merge, b, 1),
                                                ev("end", InvalidateEvent::Merge, b, 1),
                                                ev("end", InvalidateEvent::Merge, a, 1)});
    CHECK(f.host.lookup(a)->pfn == f.host.lookup(b)->pfn);
    CHECK_FALSE(f.host.lookup(a)->writable);
    CHECK(f.host.map_count(f.host.lookup(a)->pfn) == 2);
    CHECK(f.frames.counters().in_use == in_use - 1);
    f.rec.log.clear();
    auto w = f.host.fault(b, Access::Write);
    REQUIRE(w.status == HostFaultStatus::Mapped);
    CHECK(w.translation.writable);
    CHECK(f.host.lookup(b)->pfn != f.host.lookup(a)->pfn);
    CHECK(f.bytes(b)[100] == 0x11);
    CHECK(f.rec.log == std::vector<std::string>{ev("start", InvalidateEvent::Clear, b, 1),
                                                ev("end", InvalidateEvent::Clear, b, 1)});
    CHECK(f.host.counters().cow_breaks == 1);
}

TEST_CASE("merge refuses different contents and absent pages, with no change") {
    Fixture f;
    REQUIRE(f.host.fault(kBase, Access::Write).status == HostFaultStatus::Mapped);
    REQUIRE(f.host.fault(kBase + kPage, Access::Write).status == HostFaultStatus::Mapped);
    f.bytes(kBase)[9] = 1;
    CHECK_FALSE(f.host.merge(kBase, kBase + kPage));
    CHECK_FALSE(f.host.merge(kBase, kBase + 2 * kPage));
    CHECK(f.host.lookup(kBase)->writable);
}

TEST_CASE("swap out and back in: contents survive, the frame is freed meanwhile") {
    Fixture f;
    REQUIRE(f.host.fault(kBase + 3 * kPage, Access::Write).status == HostFaultStatus::Mapped);
    std::memset(f.bytes(kBase + 3 * kPage), 0x77, kPage);
    const auto in_use = f.frames.counters().in_use;
    REQUIRE(f.host.swap_out(kBase + 3 * kPage));
    CHECK(f.rec.log == std::vector<std::string>{ev("start", InvalidateEvent::SwapOut, kBase + 3 * kPage, 1),
                                                ev("end", InvalidateEvent::SwapOut, kBase + 3 * kPage, 1)});
    CHECK_FALSE(f.host.lookup(kBase + 3 * kPage));
    CHECK(f.frames.counters().in_use == in_use - 1);
    CHECK(f.host.swap_slots_in_use() == 1);
    REQUIRE(f.host.fault(kBase + 3 * kPage, Access::Read).status == HostFaultStatus::Mapped);
    CHECK(f.bytes(kBase + 3 * kPage)[4095] == 0x77);
    CHECK(f.host.swap_slots_in_use() == 0);
    CHECK(f.host.counters().swap_ins == 1);
}

TEST_CASE("unmap of a swapped-out page drops its swap slot") {
    Fixture f;
    REQUIRE(f.host.fault(kBase, Access::Write).status == HostFaultStatus::Mapped);
    REQUIRE(f.host.swap_out(kBase));
    CHECK(f.host.unmap({kBase, kBase + kPage}) == 1);
    CHECK(f.host.swap_slots_in_use() == 0);
}

TEST_CASE("age: asks the secondaries, then test-and-clears the host accessed bits") {
    Fixture f;
    REQUIRE(f.host.fault(kBase, Access::Read).status == HostFaultStatus::Mapped);
    CHECK(f.host.age({kBase, kBase + 4 * kPage}));  // host A bit was set by the fault
    CHECK_FALSE(f.host.age({kBase, kBase + 4 * kPage})); // and is clear now
    f.rec.young_answer = true;
    CHECK(f.host.age({kBase, kBase + 4 * kPage})); // a secondary says young
    CHECK(f.rec.log.size() == 3);
    CHECK(f.rec.log[0] == "clear_young " + hexs(kBase) + "-" + hexs(kBase + 4 * kPage));
}

TEST_CASE("page-at-a-time mode fires invalidate_page per changed page, no range calls") {
    FrameSpace frames{64};
    HostAddressSpace host{frames, true};
    Recorder rec;
    host.map_anonymous({kBase, kBase + 8 * kPage}, true);
    host.notifiers().subscribe(rec);
    for (int i : {0, 2, 3}) REQUIRE(host.fault(kBase + i * kPage, Access::Write).status == HostFaultStatus::Mapped);
    CHECK(host.unmap({kBase, kBase + 8 * kPage}) == 3);
    CHECK(rec.log == std::vector<std::string>{"page unmap " + hexs(kBase), "page unmap " + hexs(kBase + 2 * kPage),
                                              "page unmap " + hexs(kBase + 3 * kPage)});
    host.notifiers().unsubscribe(rec);
}

TEST_CASE("frames exhausted: the host fault fails cleanly and nothing leaks") {
    FrameSpace frames{8};
    {
        HostAddressSpace host{frames};
        host.map_anonymous({kBase, kBase + 64 * kPage}, true);
        int mapped = 0;
        HostFaultStatus last = HostFaultStatus::Mapped;
        for (int i = 0; i < 64 && last == HostFaultStatus::Mapped; ++i) {
            last = host.fault(kBase + i * kPage, Access::Write).status;
            if (last == HostFaultStatus::Mapped) ++mapped;
        }
        CHECK(last == HostFaultStatus::OutOfFrames);
        CHECK(mapped > 0);
        CHECK(frames.counters().failed > 0);
        CHECK(host.unmap({kBase, kBase + 64 * kPage}) == static_cast<std::size_t>(mapped));
    }
    // The address space freed its tables and pages on destruction.
    CHECK(frames.counters().in_use == 0);
}

TEST_CASE("concurrent host faults and migrations keep every page's contents") {
    FrameSpace frames{1024};
    HostAddressSpace host{frames};
    host.map_anonymous({kBase, kBase + 256 * kPage}, true);
    for (int i = 0; i < 256; ++i) {
        auto r = host.fault(kBase + i * kPage, Access::Write);
        REQUIRE(r.status == HostFaultStatus::Mapped);
        frames.bytes(r.translation.pfn)[0] = static_cast<std::uint8_t>(i);
    }
    std::atomic<bool> stop{false};
    std::thread migrator([&] {
        for (int round = 0; round < 4; ++round)
            for (int i = 0; i < 256; ++i) host.migrate(kBase + i * kPage);
        stop = true;
    });
    std::vector<std::thread> readers;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {
            while (!stop) {
                for (int i = 0; i < 256; ++i) {
                    auto g = host.lock_pte(kBase + i * kPage);
                    if (!g || !X86PteFormat::present(g.pte())) continue;
                    if (frames.bytes(X86PteFormat::pfn(g.pte()))[0] != static_cast<std::uint8_t>(i)) ++bad;
                }
            }
        });
    migrator.join();
    for (auto& r : readers) r.join();
    CHECK(bad == 0);
    CHECK(host.counters().migrated == 4 * 256);
}

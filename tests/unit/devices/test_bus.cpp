#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "devices/bus.hpp"
#include "tests/support/text_match.hpp"

using hv::test::contains;

namespace {

// Records every access; reads return id in byte 0 and the offset's low
// bytes after it, so a test can tell which device answered and at what offset.
class RecordingDevice final : public hv::IoDevice {
public:
    struct Access {
        bool is_write;
        uint64_t offset;
        std::vector<uint8_t> bytes;
    };

    explicit RecordingDevice(uint8_t id) : id_(id) {}

    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (std::size_t i = 0; i < data.size(); ++i) {
            data[i] = i == 0 ? id_ : static_cast<uint8_t>(offset >> (8 * (i - 1)));
        }
        std::lock_guard lock(mutex_);
        accesses_.push_back({false, offset, {data.begin(), data.end()}});
    }

    void write(uint64_t offset, std::span<const uint8_t> data) override {
        std::lock_guard lock(mutex_);
        accesses_.push_back({true, offset, {data.begin(), data.end()}});
    }

    std::vector<Access> accesses() const {
        std::lock_guard lock(mutex_);
        return accesses_;
    }

private:
    uint8_t id_;
    mutable std::mutex mutex_;
    std::vector<Access> accesses_;
};

struct Messages {
    std::mutex mutex;
    std::vector<std::string> lines;

    std::function<void(std::string_view)> sink() {
        return [this](std::string_view line) {
            std::lock_guard lock(mutex);
            lines.emplace_back(line);
        };
    }
    std::size_t count() {
        std::lock_guard lock(mutex);
        return lines.size();
    }
};

}  // namespace

TEST_CASE("Bus::add allows adjacent ranges") {
    hv::Bus bus("port");
    RecordingDevice a(1), b(2), c(3);
    CHECK_NOTHROW(bus.add(0x100, 0x10, a, "a"));
    CHECK_NOTHROW(bus.add(0x110, 0x10, b, "b"));  // starts right after a
    CHECK_NOTHROW(bus.add(0xf0, 0x10, c, "c"));   // ends right before a
    CHECK(bus.device_at(0xff) == "c");
    CHECK(bus.device_at(0x100) == "a");
    CHECK(bus.device_at(0x10f) == "a");
    CHECK(bus.device_at(0x110) == "b");
    CHECK(bus.device_at(0x11f) == "b");
    CHECK_FALSE(bus.device_at(0x120).has_value());
    CHECK_FALSE(bus.device_at(0xef).has_value());
}

TEST_CASE("Bus::add rejects overlapping ranges and names both devices") {
    hv::Bus bus("port");
    RecordingDevice existing(1), newcomer(2);
    bus.add(0x3f8, 8, existing, "serial");

    uint64_t base = 0;
    uint64_t size = 0;
    std::string new_range;
    SUBCASE("exact") {
        base = 0x3f8;
        size = 8;
        new_range = "[0x3f8, 0x3ff]";
    }
    SUBCASE("partial, below") {
        base = 0x3f0;
        size = 9;
        new_range = "[0x3f0, 0x3f8]";
    }
    SUBCASE("partial, above") {
        base = 0x3ff;
        size = 4;
        new_range = "[0x3ff, 0x402]";
    }
    SUBCASE("contained") {
        base = 0x3fa;
        size = 2;
        new_range = "[0x3fa, 0x3fb]";
    }
    SUBCASE("containing") {
        base = 0x300;
        size = 0x200;
        new_range = "[0x300, 0x4ff]";
    }

    std::string message;
    try {
        bus.add(base, size, newcomer, "intruder");
        FAIL("expected BusError");
    } catch (const hv::BusError& e) {
        message = e.what();
    }
    CHECK(contains(message, "\"intruder\" " + new_range));
    CHECK(contains(message, "\"serial\" [0x3f8, 0x3ff]"));
    CHECK(contains(message, "port"));
    // The failed registration left the bus unchanged.
    CHECK(bus.device_at(0x3f8) == "serial");
    CHECK_FALSE(bus.device_at(0x3f7).has_value());
    CHECK_FALSE(bus.device_at(0x400).has_value());
}

TEST_CASE("Bus::add rejects overlap with the neighbour below when a range lies above") {
    // The new range sits between two registrations and touches only the lower.
    hv::Bus bus("mmio");
    RecordingDevice low(1), high(2), mid(3);
    bus.add(0x1000, 0x1000, low, "low");
    bus.add(0x4000, 0x1000, high, "high");
    try {
        bus.add(0x1fff, 0x10, mid, "mid");
        FAIL("expected BusError");
    } catch (const hv::BusError& e) {
        CHECK(contains(e.what(), "\"low\" [0x1000, 0x1fff]"));
        CHECK(contains(e.what(), "\"mid\" [0x1fff, 0x200e]"));
    }
    CHECK_NOTHROW(bus.add(0x2000, 0x2000, mid, "mid"));  // exactly fills the gap
}

TEST_CASE("Bus::add rejects size 0") {
    hv::Bus bus("port");
    RecordingDevice dev(1);
    try {
        bus.add(0x80, 0, dev, "empty");
        FAIL("expected BusError");
    } catch (const hv::BusError& e) {
        CHECK(contains(e.what(), "\"empty\""));
        CHECK(contains(e.what(), "0x80"));
        CHECK(contains(e.what(), "found 0"));
    }
    CHECK_FALSE(bus.device_at(0x80).has_value());
}

TEST_CASE("Bus::add rejects ranges wrapping past 2^64 but accepts one ending at the top") {
    hv::Bus bus("mmio");
    RecordingDevice dev(7);
    CHECK_THROWS_AS(bus.add(0xffff'ffff'ffff'fff0, 0x11, dev, "wrap"), hv::BusError);
    CHECK_THROWS_AS(bus.add(2, UINT64_MAX, dev, "wrap"), hv::BusError);
    CHECK_THROWS_AS(bus.add(UINT64_MAX, 2, dev, "wrap"), hv::BusError);
    CHECK_FALSE(bus.device_at(UINT64_MAX).has_value());

    bus.add(0xffff'ffff'ffff'fff0, 0x10, dev, "top");
    CHECK(bus.device_at(UINT64_MAX) == "top");
    std::array<uint8_t, 1> byte{};
    CHECK(bus.read(UINT64_MAX, byte) == hv::BusResult::Handled);
    CHECK(byte[0] == 7);
    REQUIRE(dev.accesses().size() == 1);
    CHECK(dev.accesses()[0].offset == 0xf);
}

TEST_CASE("Bus::add accepts a range covering the whole address space") {
    hv::Bus bus("mmio");
    RecordingDevice dev(1), other(2);
    bus.add(0, UINT64_MAX, dev, "almost-all");  // [0, 2^64 - 2]
    CHECK(bus.device_at(UINT64_MAX - 1) == "almost-all");
    CHECK_FALSE(bus.device_at(UINT64_MAX).has_value());
    CHECK_NOTHROW(bus.add(UINT64_MAX, 1, other, "last-byte"));
    CHECK(bus.device_at(UINT64_MAX) == "last-byte");
}

TEST_CASE("Bus dispatches to the claiming device with the offset from its base") {
    hv::Bus bus("port");
    RecordingDevice serial(1), pit(2);
    bus.add(0x3f8, 8, serial, "serial");
    bus.add(0x40, 4, pit, "pit");

    std::array<uint8_t, 2> two{};
    CHECK(bus.read(0x3fd, two) == hv::BusResult::Handled);
    CHECK(two[0] == 1);  // serial answered
    CHECK(two[1] == 5);  // at offset 5

    std::array<uint8_t, 1> one{};
    CHECK(bus.read(0x43, one) == hv::BusResult::Handled);
    CHECK(one[0] == 2);

    const std::array<uint8_t, 4> value{0xde, 0xad, 0xbe, 0xef};
    CHECK(bus.write(0x3f8, value) == hv::BusResult::Handled);
    CHECK(bus.write(0x41, std::span(value).first(1)) == hv::BusResult::Handled);

    const auto serial_log = serial.accesses();
    REQUIRE(serial_log.size() == 2);
    CHECK_FALSE(serial_log[0].is_write);
    CHECK(serial_log[0].offset == 5);
    CHECK(serial_log[1].is_write);
    CHECK(serial_log[1].offset == 0);
    CHECK(serial_log[1].bytes == std::vector<uint8_t>{0xde, 0xad, 0xbe, 0xef});

    const auto pit_log = pit.accesses();
    REQUIRE(pit_log.size() == 2);
    CHECK(pit_log[0].offset == 3);
    CHECK(pit_log[1].is_write);
    CHECK(pit_log[1].offset == 1);
    CHECK(pit_log[1].bytes == std::vector<uint8_t>{0xde});
}

TEST_CASE("Bus routes an access straddling a device's end by its first byte") {
    hv::Bus bus("port");
    RecordingDevice exit_port(9);
    bus.add(0xf4, 1, exit_port, "debug-exit");
    const std::array<uint8_t, 4> value{1, 0, 0, 0};
    CHECK(bus.write(0xf4, value) == hv::BusResult::Handled);
    const auto log = exit_port.accesses();
    REQUIRE(log.size() == 1);
    CHECK(log[0].offset == 0);
    CHECK(log[0].bytes.size() == 4);
}

TEST_CASE("Bus unclaimed reads fill all ones and writes are dropped") {
    hv::Bus bus("mmio");
    Messages messages;
    bus.set_unclaimed_sink(messages.sink());
    RecordingDevice dev(1);
    bus.add(0x1000, 0x100, dev, "dev");

    std::array<uint8_t, 8> data{};
    data.fill(0x12);
    CHECK(bus.read(0x0fff, data) == hv::BusResult::Unclaimed);
    for (uint8_t byte : data) {
        CHECK(byte == 0xff);
    }
    std::array<uint8_t, 4> four{};
    CHECK(bus.read(0x1100, four) == hv::BusResult::Unclaimed);
    CHECK(four == std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff});

    const std::array<uint8_t, 2> value{1, 2};
    CHECK(bus.write(0x2000, value) == hv::BusResult::Unclaimed);
    CHECK(dev.accesses().empty());
}

TEST_CASE("Bus reports each unclaimed address once") {
    hv::Bus bus("port");
    Messages messages;
    bus.set_unclaimed_sink(messages.sink());

    std::array<uint8_t, 1> byte{};
    bus.read(0x70, byte);
    REQUIRE(messages.count() == 1);
    CHECK(contains(messages.lines[0], "port"));
    CHECK(contains(messages.lines[0], "read"));
    CHECK(contains(messages.lines[0], "0x70"));

    // Same address again, as a read and as a write: not reported.
    bus.read(0x70, byte);
    const std::array<uint8_t, 2> value{0x34, 0x12};
    bus.write(0x70, value);
    CHECK(messages.count() == 1);

    // A different address is.
    bus.write(0x71, value);
    REQUIRE(messages.count() == 2);
    CHECK(contains(messages.lines[1], "write"));
    CHECK(contains(messages.lines[1], "0x1234"));
    CHECK(contains(messages.lines[1], "0x71"));
    CHECK_FALSE(contains(messages.lines[1], "\n"));

    // Claimed accesses are never reported.
    RecordingDevice dev(1);
    hv::Bus other("port");
    other.set_unclaimed_sink(messages.sink());
    other.add(0x80, 1, dev, "dev");
    other.read(0x80, byte);
    CHECK(messages.count() == 2);
}

TEST_CASE("Bus stops reporting new unclaimed addresses after the limit, saying so once") {
    hv::Bus bus("mmio");
    Messages messages;
    bus.set_unclaimed_sink(messages.sink());
    std::array<uint8_t, 1> byte{};
    for (uint64_t addr = 0; addr < hv::Bus::max_reported_unclaimed + 10; ++addr) {
        bus.read(addr, byte);
    }
    REQUIRE(messages.count() == hv::Bus::max_reported_unclaimed + 1);
    CHECK(contains(messages.lines.back(), "not reporting further"));
    // Addresses reported before the limit stay silent; reads still return ones.
    byte[0] = 0;
    CHECK(bus.read(0, byte) == hv::BusResult::Unclaimed);
    CHECK(byte[0] == 0xff);
    CHECK(messages.count() == hv::Bus::max_reported_unclaimed + 1);
}

TEST_CASE("Bus serves concurrent reads from several threads") {
    hv::Bus bus("port");
    Messages messages;
    bus.set_unclaimed_sink(messages.sink());
    std::vector<std::unique_ptr<RecordingDevice>> devices;
    for (uint8_t i = 0; i < 8; ++i) {
        devices.push_back(std::make_unique<RecordingDevice>(static_cast<uint8_t>(i + 1)));
        bus.add(0x1000 + 0x100 * i, 0x80, *devices.back(), "dev" + std::to_string(i));
    }

    constexpr int kThreads = 8;
    constexpr int kReadsPerThread = 2000;
    std::atomic<int> wrong{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            while (!go.load()) {
                std::this_thread::yield();
            }
            for (int n = 0; n < kReadsPerThread; ++n) {
                const int dev = (t + n) % 8;
                const uint64_t offset = static_cast<uint64_t>(n % 0x80);
                std::array<uint8_t, 2> data{};
                if (bus.read(0x1000 + 0x100 * dev + offset, data) != hv::BusResult::Handled ||
                    data[0] != dev + 1 || data[1] != offset) {
                    ++wrong;
                }
                // Every thread also hits the same gap: reported exactly once.
                std::array<uint8_t, 1> gap{};
                if (bus.read(0x1080, gap) != hv::BusResult::Unclaimed || gap[0] != 0xff) {
                    ++wrong;
                }
            }
        });
    }
    go = true;
    for (auto& thread : threads) {
        thread.join();
    }
    CHECK(wrong.load() == 0);
    std::size_t total = 0;
    for (const auto& dev : devices) {
        total += dev->accesses().size();
    }
    CHECK(total == kThreads * kReadsPerThread);
    CHECK(messages.count() == 1);
}

#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "devices/io_device.hpp"

namespace hv {

// The guest's "stop the VM with this status" port (HV_DEBUG_EXIT_PORT,
// registered with size 1). A 1-, 2- or 4-byte write at offset 0 reports the
// value, zero-extended from little-endian, to on_exit; other writes (wrong
// width, or the upper bytes of a wider access routed here) are ignored.
// Reads return all ones, like an unclaimed port.
//
// on_exit is called with the device's mutex held, so concurrent exits from
// several vCPUs reach it one at a time; deciding which one wins is up to it.
class DebugExit final : public IoDevice {
public:
    using OnExit = std::function<void(uint32_t value)>;

    static constexpr uint64_t size = 1;

    explicit DebugExit(OnExit on_exit);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    std::mutex mutex_;
    OnExit on_exit_;
};

}  // namespace hv

#include "devices/debug_exit.hpp"

#include <utility>

#include "devices/little_endian.hpp"

namespace hv {

DebugExit::DebugExit(OnExit on_exit) : on_exit_(std::move(on_exit)) {}

void DebugExit::read(uint64_t, std::span<uint8_t> data) {
    for (auto& byte : data) {
        byte = 0xff;
    }
}

void DebugExit::write(uint64_t offset, std::span<const uint8_t> data) {
    const std::size_t width = data.size();
    if (offset != 0 || (width != 1 && width != 2 && width != 4)) {
        return;
    }
    const auto value = static_cast<uint32_t>(load_le(data));
    std::lock_guard lock(mutex_);
    if (on_exit_) {
        on_exit_(value);
    }
}

}  // namespace hv

#include "devices/fw_cfg.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "devices/little_endian.hpp"

namespace hv {
namespace {

constexpr uint64_t kSelectorPort = 0;
constexpr uint64_t kDataPort = 1;

constexpr uint16_t kEntryMask = static_cast<uint16_t>(~(fw_cfg_key::kWriteChannel | fw_cfg_key::kArchLocal));
constexpr uint32_t kIdTraditional = 1u << 0;  // bit 1 (DMA) stays clear
constexpr std::size_t kUuidBytes = 16;

std::vector<uint8_t> le_bytes(uint64_t value, std::size_t width) {
    std::vector<uint8_t> bytes(width);
    store_le(value, bytes);
    return bytes;
}

}  // namespace

FwCfg::FwCfg(const FwCfgConfig& config) : items_(fw_cfg_key::kFileDir + 1) {
    using namespace fw_cfg_key;
    items_[kSignature] = {'Q', 'E', 'M', 'U'};
    items_[kId] = le_bytes(kIdTraditional, 4);
    items_[kUuid] = std::vector<uint8_t>(kUuidBytes, 0);
    items_[kRamSize] = le_bytes(config.ram_size, 8);
    items_[kCpuCount] = le_bytes(config.cpus, 2);
    items_[kMaxCpus] = le_bytes(config.max_cpus, 2);

    const std::size_t length = std::strlen(config.cmdline.c_str());  // up to the first NUL
    items_[kCmdlineSize] = le_bytes(length + 1, 4);
    items_[kCmdlineData].assign(config.cmdline.begin(), config.cmdline.begin() + static_cast<std::ptrdiff_t>(length));
    items_[kCmdlineData].push_back(0);
    irq0_override_ = le_bytes(1, 4);

    // QEMU's file directory is big-endian; a count of 0 is four zero bytes
    // either way, but stays a 4-byte item.
    items_[kFileDir] = std::vector<uint8_t>(4, 0);
}

std::span<const uint8_t> FwCfg::selected_item() const {
    if ((selected_ & fw_cfg_key::kArchLocal) != 0) {
        if ((selected_ & ~fw_cfg_key::kWriteChannel) == fw_cfg_key::kIrq0Override) return irq0_override_;
        return {};  // nothing else in the architecture-local table
    }
    const std::size_t index = selected_ & kEntryMask;
    if (index >= items_.size()) {
        return {};
    }
    return items_[index];
}

void FwCfg::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    if (offset != kDataPort) {
        std::fill(data.begin(), data.end(), uint8_t{0});
        return;
    }
    const std::span<const uint8_t> item = selected_item();
    for (uint8_t& byte : data) {
        if (offset_ < item.size()) {
            byte = item[offset_++];
        } else {
            byte = 0;
        }
    }
}

void FwCfg::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset != kSelectorPort || data.empty()) {
        return;  // data port writes are ignored
    }
    const uint16_t key = static_cast<uint16_t>(load_le(data.first(std::min<std::size_t>(data.size(), 2))));
    std::lock_guard lock(mutex_);
    selected_ = key;
    offset_ = 0;
}

}  // namespace hv

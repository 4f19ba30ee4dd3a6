#pragma once

#include <stdexcept>
#include <string>

namespace hv {

// Thrown by Bus::add when a registration is invalid (empty, wrapping past
// 2^64 or overlapping another device). These are VMM configuration bugs, not
// guest behaviour, so they are reported by exception rather than logged.
class BusError : public std::runtime_error {
public:
    explicit BusError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace hv

#pragma once
// Substring checks for the tests' message assertions.
#include <string>

namespace hv::test {

inline bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

} // namespace hv::test

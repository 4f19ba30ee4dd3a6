#pragma once
// Text checks for the tests' message assertions: substring matches on
// output text, the message of an expected exception, and a string as the
// bytes a device or stream takes.
#include <cstdint>
#include <string>
#include <vector>

namespace hv::test {

inline bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// The message of the exception `f` throws as E (`none` when it throws nothing).
template <class E, class F>
std::string message_of(F&& f, const std::string& none = "") {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return none;
}

// The bytes of `s`, without a terminator.
inline std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

} // namespace hv::test

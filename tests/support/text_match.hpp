#pragma once
// Text checks for the tests' message assertions: substring matches on
// output text and the message of an expected exception.
#include <string>

namespace hv::test {

inline bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// The message of the exception `f` throws as E ("" when it throws nothing).
template <class E, class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

} // namespace hv::test

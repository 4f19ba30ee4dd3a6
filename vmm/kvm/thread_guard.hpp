#pragma once
// Nothing may leave the function of a thread the VMM starts (a vCPU, the
// host churn): an exception there would terminate the VMM with the guest's
// run unreported. Each runs its body through run_guarded, which turns any
// exception into one failure with its reason, and the VM ends as the VMM's
// failure instead.
#include <exception>
#include <string>
#include <string_view>

namespace hv {

// Runs body(); when it throws, calls fail("PREFIX: WHAT") (WHAT is "an
// exception of unknown type" for one not derived from std::exception) and
// returns normally. `fail` must not throw.
template <class Body, class Fail>
void run_guarded(std::string_view prefix, Body&& body, Fail&& fail) {
    std::string what;
    try {
        body();
        return;
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
        what = "an exception of unknown type";
    }
    fail(std::string(prefix) + ": " + what);
}

} // namespace hv

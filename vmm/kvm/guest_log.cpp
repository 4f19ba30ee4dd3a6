#include "vmm/kvm/guest_log.hpp"

namespace hv {

GuestLog::~GuestLog() {
    try {
        finish();
    } catch (...) {
        // A sink that throws while the VM is torn down loses the summary, nothing else.
    }
}

GuestLog::Kind& GuestLog::kind_locked(std::string_view name) {
    for (Kind& k : kinds_)
        if (k.name == name) return k;
    return kinds_.emplace_back(Kind{std::string(name)});
}

bool GuestLog::admit(std::string_view kind) {
    std::lock_guard lock(mutex_);
    return kind_locked(kind).seen++ < listed_;
}

void GuestLog::print(std::string_view kind, std::string_view line) {
    if (admit(kind) && sink_) sink_(line);
}

void GuestLog::finish() {
    std::vector<std::string> lines;
    {
        std::lock_guard lock(mutex_);
        for (Kind& k : kinds_) {
            const std::uint64_t suppressed = k.seen > listed_ ? k.seen - listed_ : 0;
            if (suppressed == k.summarized) continue;
            lines.push_back("... and " + std::to_string(suppressed - k.summarized) + " more " + k.name + " (suppressed)");
            k.summarized = suppressed;
        }
    }
    if (sink_)
        for (const auto& line : lines) sink_(line);
}

std::uint64_t GuestLog::suppressed(std::string_view kind) const {
    std::lock_guard lock(mutex_);
    for (const Kind& k : kinds_)
        if (k.name == kind) return k.seen > listed_ ? k.seen - listed_ : 0;
    return 0;
}

} // namespace hv

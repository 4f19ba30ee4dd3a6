#pragma once
// Lines a guest can make the VMM print as often as it likes (its exception
// reports, the results of its coherence checks): a hostile guest must not
// fill the VMM's stderr. The first `listed` lines of each kind are printed,
// the rest only counted, and finish() prints "... and N more KIND
// (suppressed)" for each kind that had more, as the unclaimed-access list of
// --stats does. Thread-safe; the sink is called outside the lock. The
// destructor calls finish().
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace hv {

class GuestLog {
public:
    using Sink = std::function<void(std::string_view)>;
    static constexpr std::uint64_t kListed = 8;

    explicit GuestLog(Sink sink, std::uint64_t listed = kListed) : sink_(std::move(sink)), listed_(listed) {}
    ~GuestLog();
    GuestLog(const GuestLog&) = delete;
    GuestLog& operator=(const GuestLog&) = delete;

    // Counts one line of `kind` (a plural noun: "guest exception reports");
    // true when it is among the first `listed` of its kind and is to be printed.
    bool admit(std::string_view kind);
    // admit(), then the line to the sink when admitted.
    void print(std::string_view kind, std::string_view line);
    // print() for a line that costs something to make: `make` runs only when
    // the line is admitted (a verify can find a million lost writes).
    template <class Make>
    void print_with(std::string_view kind, Make&& make) {
        if (admit(kind) && sink_) sink_(make());
    }
    // One "... and N more KIND (suppressed)" line per kind with lines not
    // printed since the last finish().
    void finish();
    std::uint64_t suppressed(std::string_view kind) const; // not printed so far

private:
    struct Kind {
        std::string name;
        std::uint64_t seen = 0, summarized = 0; // summarized: suppressed lines finish() already counted
    };
    Kind& kind_locked(std::string_view name);

    Sink sink_;
    std::uint64_t listed_;
    mutable std::mutex mutex_;
    std::vector<Kind> kinds_; // a handful: kinds are constants in the code
};

} // namespace hv

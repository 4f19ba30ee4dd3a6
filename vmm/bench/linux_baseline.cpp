#include "vmm/bench/linux_baseline.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/unique_fd.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <latch>
#include <numeric>
#include <stdexcept>
#include <stop_token>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace hv::bench {

double LinuxResult::ns_per_page() const { return pages ? static_cast<double>(total_ns) / static_cast<double>(pages) : 0; }

double LinuxResult::ns_per_call() const { return calls ? static_cast<double>(total_ns) / static_cast<double>(calls) : 0; }

double LinuxResult::pages_per_second() const {
    return total_ns ? static_cast<double>(pages) * 1e9 / static_cast<double>(total_ns) : 0;
}

namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t ns_between(Clock::time_point from, Clock::time_point to) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count());
}

// Takes errno as an argument: building `what` may allocate, and so clobber it.
[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), what);
}

std::string errno_text(int err) { return std::generic_category().message(err); }

void check_pages(const char* fn, std::uint64_t pages) {
    if (pages == 0 || pages > kMaxBytes / kPageBytes)
        throw std::invalid_argument(std::string(fn) + ": expected 1.." + std::to_string(kMaxBytes / kPageBytes) +
                                    " pages, got " + std::to_string(pages));
}

void check_threads(const char* fn, std::uint32_t threads) {
    if (threads == 0 || threads > kMaxThreads)
        throw std::invalid_argument(std::string(fn) + ": expected 1.." + std::to_string(kMaxThreads) +
                                    " threads, got " + std::to_string(threads));
}

void check_range(const char* fn, std::uint64_t bytes, std::uint64_t chunk_bytes) {
    if (bytes == 0 || bytes % kPageBytes != 0 || bytes > kMaxBytes)
        throw std::invalid_argument(std::string(fn) + ": expected bytes a non-zero multiple of 4096 up to " +
                                    format_size(kMaxBytes) + ", got " + std::to_string(bytes));
    if (chunk_bytes == 0 || chunk_bytes % kPageBytes != 0 || bytes % chunk_bytes != 0)
        throw std::invalid_argument(std::string(fn) + ": expected chunk_bytes a non-zero multiple of 4096 dividing " +
                                    std::to_string(bytes) + ", got " + std::to_string(chunk_bytes));
}

// An anonymous private mapping. 2 MiB aligned so that a 2 MiB chunk covers
// exactly one page-table page, as a 2 MiB range does in our MMU;
// MAP_NORESERVE so a 4 GiB region needs no commit reservation;
// MADV_NOHUGEPAGE so that what is measured is 4 KiB work.
class Region {
public:
    Region(std::uint64_t bytes, const char* what);
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    ~Region() {
        if (base_) ::munmap(base_, bytes_);
    }

    std::uint8_t* data() const { return base_; }
    std::span<std::uint8_t> span() const { return {base_, bytes_}; }
    // For callers that unmap the region themselves (the munmap zap).
    std::uint8_t* release() { return std::exchange(base_, nullptr); }

private:
    std::uint8_t* base_ = nullptr;
    std::uint64_t bytes_ = 0;
};

Region::Region(std::uint64_t bytes, const char* what) : bytes_(bytes) {
    const std::uint64_t slack = kHugeBytes - kPageBytes;
    void* raw = ::mmap(nullptr, bytes + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    if (raw == MAP_FAILED) {
        const int err = errno;
        throw_errno(err, "mmap of " + format_size(bytes) + " for " + what);
    }
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const auto aligned = (start + kHugeBytes - 1) & ~(kHugeBytes - 1);
    if (aligned != start) ::munmap(raw, aligned - start);
    if (const auto tail = start + bytes + slack - (aligned + bytes); tail != 0)
        ::munmap(reinterpret_cast<void*>(aligned + bytes), tail);
    base_ = reinterpret_cast<std::uint8_t*>(aligned);
    // EINVAL: a kernel without transparent huge pages, so nothing to turn off.
    if (::madvise(base_, bytes_, MADV_NOHUGEPAGE) != 0 && errno != EINVAL) {
        const int err = errno;
        ::munmap(base_, bytes_); // a throwing constructor runs no destructor
        throw_errno(err, "madvise(MADV_NOHUGEPAGE) of " + format_size(bytes) + " for " + what);
    }
}

void populate(std::span<std::uint8_t> region) {
    for (std::uint64_t off = 0; off < region.size(); off += kPageBytes)
        *static_cast<volatile std::uint8_t*>(&region[off]) = 1;
}

// Thread t's share of `pages` when split between `threads`: [first, end).
std::pair<std::uint64_t, std::uint64_t> share(std::uint64_t pages, std::uint32_t threads, std::uint32_t t) {
    return {pages * t / threads, pages * (t + 1) / threads};
}

// Threads that start at one instant: each parks at the gate once running,
// run() opens it, and the time returned runs from the opening to the last
// thread's finish, so thread creation and joining are not measured.
class Team {
public:
    Team(std::uint32_t threads, std::function<void(std::uint32_t)> body);
    Team(const Team&) = delete;
    Team& operator=(const Team&) = delete;
    ~Team() { stop(); }

    std::uint64_t run();

private:
    enum Gate : int { kParked, kGo, kAbort };
    void stop();

    std::function<void(std::uint32_t)> body_;
    std::atomic<int> gate_{kParked};
    std::latch parked_;
    std::vector<Clock::time_point> finished_; // slot t written only by thread t
    std::vector<std::thread> threads_;
};

Team::Team(std::uint32_t threads, std::function<void(std::uint32_t)> body)
    : body_(std::move(body)), parked_(threads), finished_(threads) {
    threads_.reserve(threads);
    try {
        for (std::uint32_t t = 0; t < threads; ++t)
            threads_.emplace_back([this, t] {
                parked_.count_down();
                gate_.wait(kParked, std::memory_order_acquire);
                if (gate_.load(std::memory_order_acquire) == kAbort) return;
                body_(t);
                finished_[t] = Clock::now();
            });
    } catch (const std::system_error& e) {
        const auto started = threads_.size();
        stop();
        throw std::system_error(e.code(), "cannot start thread " + std::to_string(started + 1) + " of " +
                                              std::to_string(threads));
    }
}

void Team::stop() {
    if (gate_.load() == kParked) {
        gate_.store(kAbort, std::memory_order_release);
        gate_.notify_all();
    }
    for (auto& thread : threads_)
        if (thread.joinable()) thread.join();
}

std::uint64_t Team::run() {
    parked_.wait();
    const auto released = Clock::now();
    gate_.store(kGo, std::memory_order_release);
    gate_.notify_all();
    for (auto& thread : threads_) thread.join();
    return ns_between(released, *std::max_element(finished_.begin(), finished_.end()));
}

// --- userfaultfd ---------------------------------------------------------

// UFFD_USER_MODE_ONLY first: Linux grants it to unprivileged processes even
// with vm.unprivileged_userfaultfd=0, and the touchers fault in user mode
// only. Kernels before 5.11 reject the flag with EINVAL; then ask without it.
// O_NONBLOCK: poll() on a blocking userfaultfd reports POLLERR.
UniqueFd open_userfaultfd(std::string& why) {
    long fd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    const char* call = "userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)";
    if (fd < 0 && errno == EINVAL) {
        fd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        call = "userfaultfd(O_CLOEXEC | O_NONBLOCK)";
    }
    if (fd < 0) {
        const int err = errno;
        why = std::string(call) + " failed: " + errno_text(err);
        if (err == ENOSYS) why += " (kernel without CONFIG_USERFAULTFD, or a seccomp filter)";
        if (err == EPERM) why += " (vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE, or a seccomp filter)";
    }
    return UniqueFd(static_cast<int>(fd));
}

struct HandlerState {
    std::uint64_t copies = 0;
    std::string error; // the first failure; the handler stops there
};

class FaultHandler {
public:
    FaultHandler(int uffd, std::span<std::uint8_t> region, std::span<std::uint8_t> source, HandlerState& state)
        : uffd_(uffd), region_(region), source_(source), state_(state) {}

    // Serves faults until `stop`, or the first failure: then it unregisters
    // the region, which wakes every waiting toucher and lets the rest fault
    // in zero pages, so no toucher waits forever on a dead handler.
    void serve(std::stop_token stop, int wake_fd);

private:
    bool resolve(std::uint64_t address);
    void fail(const std::string& what, int err);

    int uffd_;
    std::span<std::uint8_t> region_;
    std::span<std::uint8_t> source_;
    HandlerState& state_;
};

void FaultHandler::fail(const std::string& what, int err) {
    state_.error = what + (err ? ": " + errno_text(err) : "");
    uffdio_range range{reinterpret_cast<std::uint64_t>(region_.data()), region_.size()};
    ::ioctl(uffd_, UFFDIO_UNREGISTER, &range);
}

bool FaultHandler::resolve(std::uint64_t address) {
    const auto base = reinterpret_cast<std::uint64_t>(region_.data());
    if (address < base || address >= base + region_.size()) {
        fail("fault at " + hex(address) + " outside the registered region", 0);
        return false;
    }
    const std::uint64_t page = (address - base) / kPageBytes;
    for (std::size_t i = 0; i < 8; ++i) source_[i] = uffd_pattern_byte(page, i);
    uffdio_copy copy{};
    copy.dst = base + page * kPageBytes;
    copy.src = reinterpret_cast<std::uint64_t>(source_.data());
    copy.len = kPageBytes;
    for (;;) {
        if (::ioctl(uffd_, UFFDIO_COPY, &copy) == 0) {
            ++state_.copies;
            return true;
        }
        if (errno == EAGAIN) continue; // the address space was changing; nothing was copied
        if (errno == EEXIST) {
            // A fault raised twice for one page: it is mapped, but UFFDIO_COPY
            // wakes waiters only when it copied, so wake them here.
            uffdio_range range{copy.dst, kPageBytes};
            if (::ioctl(uffd_, UFFDIO_WAKE, &range) == 0) return true;
            const int err = errno;
            fail("ioctl(UFFDIO_WAKE) at " + hex(copy.dst), err);
            return false;
        }
        const int err = errno;
        fail("ioctl(UFFDIO_COPY) to " + hex(copy.dst), err);
        return false;
    }
}

void FaultHandler::serve(std::stop_token stop, int wake_fd) {
    std::stop_callback on_stop(stop, [wake_fd] {
        const std::uint64_t one = 1;
        const ssize_t n = ::write(wake_fd, &one, sizeof one); // cannot fail: the counter is far from overflow
        (void)n;
    });
    pollfd fds[2] = {{uffd_, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    uffd_msg msgs[64];
    for (;;) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            fail("poll on the userfaultfd", err);
            return;
        }
        if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            fail("poll on the userfaultfd reported an error", 0);
            return;
        }
        for (;;) {
            const ssize_t n = ::read(uffd_, msgs, sizeof msgs);
            if (n < 0 && errno == EAGAIN) break;
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0 || n % static_cast<ssize_t>(sizeof(uffd_msg)) != 0) {
                const int err = n < 0 ? errno : 0;
                fail("read of the userfaultfd returned " + std::to_string(n), err);
                return;
            }
            for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof(uffd_msg); ++i) {
                if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
                    fail("unexpected userfaultfd event " + std::to_string(msgs[i].event), 0);
                    return;
                }
                if (!resolve(msgs[i].arg.pagefault.address)) return;
            }
        }
        // Faults first: stop comes only once every toucher is done anyway.
        if (fds[1].revents & POLLIN) return;
    }
}

LinuxResult unavailable(std::string why) {
    LinuxResult r;
    r.available = false;
    r.unavailable_reason = std::move(why);
    return r;
}

} // namespace

std::uint64_t resident_pages(std::span<const std::uint8_t> range) {
    if (range.empty()) return 0;
    std::vector<unsigned char> vec((range.size() + kPageBytes - 1) / kPageBytes);
    if (::mincore(const_cast<std::uint8_t*>(range.data()), range.size(), vec.data()) != 0) {
        const int err = errno;
        throw_errno(err, "mincore of " + format_size(range.size()) + " at " +
                             hex(reinterpret_cast<std::uint64_t>(range.data())));
    }
    return static_cast<std::uint64_t>(std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return c & 1; }));
}

LinuxResult linux_first_touch(std::uint64_t pages, std::uint32_t threads, Sharing sharing, const Inspect& inspect) {
    check_pages("linux_first_touch", pages);
    check_threads("linux_first_touch", threads);
    Region region(pages * kPageBytes, "first-touch faults");
    std::uint8_t* const base = region.data();
    // Relaxed atomic stores: in Shared mode threads may write the same byte;
    // on x86 this is a plain store, so the fault is all that is measured.
    Team team(threads, [=](std::uint32_t t) {
        const auto [first, end] = share(pages, threads, t);
        if (sharing == Sharing::Disjoint) {
            for (std::uint64_t p = first; p < end; ++p)
                std::atomic_ref<std::uint8_t>(base[p * kPageBytes]).store(1, std::memory_order_relaxed);
            return;
        }
        const std::uint64_t offset = (t % 64) * 64;
        for (std::uint64_t k = 0, p = first; k < pages; ++k, p = p + 1 == pages ? 0 : p + 1)
            std::atomic_ref<std::uint8_t>(base[p * kPageBytes + offset]).store(1, std::memory_order_relaxed);
    });
    LinuxResult r;
    r.pages = pages;
    r.total_ns = team.run();
    if (inspect) inspect(region.span());
    return r;
}

LinuxResult uffd_copy_faults(std::uint64_t pages, std::uint32_t threads, const Inspect& inspect) {
    static_assert(std::endian::native == std::endian::little, "touchers compare the stamp as a native u64");
    check_pages("uffd_copy_faults", pages);
    check_threads("uffd_copy_faults", threads);
    Region region(pages * kPageBytes, "userfaultfd demand paging");
    Region source(kPageBytes, "the UFFDIO_COPY source page");
    for (std::size_t i = 0; i < kPageBytes; ++i) source.data()[i] = uffd_pattern_byte(0, i);

    std::string why;
    const UniqueFd uffd = open_userfaultfd(why);
    if (!uffd.valid()) return unavailable(why);
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) {
        const int err = errno;
        return unavailable("ioctl(UFFDIO_API) failed: " + errno_text(err));
    }
    uffdio_register reg{};
    reg.range = {reinterpret_cast<std::uint64_t>(region.data()), pages * kPageBytes};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0) {
        const int err = errno;
        return unavailable("ioctl(UFFDIO_REGISTER, MODE_MISSING) of anonymous memory failed: " + errno_text(err));
    }
    if (!(reg.ioctls & (1ull << _UFFDIO_COPY)))
        return unavailable("ioctl(UFFDIO_REGISTER) succeeded but does not offer UFFDIO_COPY on anonymous memory");

    const UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake.valid()) {
        const int err = errno;
        throw_errno(err, "eventfd for the userfaultfd handler");
    }
    HandlerState state;
    FaultHandler handler(uffd.get(), region.span(), source.span(), state);
    // Declared after everything it uses: destroyed (stopped, joined) first.
    std::jthread handler_thread([&handler, fd = wake.get()](std::stop_token stop) { handler.serve(stop, fd); });

    std::vector<std::uint64_t> misread(threads);
    const std::uint8_t* const base = region.data();
    Team touchers(threads, [&misread, base, pages, threads](std::uint32_t t) {
        const auto [first, end] = share(pages, threads, t);
        for (std::uint64_t p = first; p < end; ++p) {
            std::uint64_t stamp;
            std::memcpy(&stamp, base + p * kPageBytes, sizeof stamp);
            if (stamp != p) ++misread[t];
        }
    });
    LinuxResult r;
    r.pages = pages;
    r.total_ns = touchers.run();
    handler_thread.request_stop();
    handler_thread.join();
    r.calls = state.copies;
    if (!state.error.empty()) throw std::runtime_error("userfaultfd handler: " + state.error);
    if (const auto bad = std::accumulate(misread.begin(), misread.end(), std::uint64_t{0}); bad != 0)
        throw std::runtime_error("userfaultfd: " + std::to_string(bad) + " of " + std::to_string(pages) +
                                 " pages read back without the handler's stamp");
    if (inspect) inspect(region.span());
    return r;
}

LinuxResult linux_zap(std::uint64_t bytes, std::uint64_t chunk_bytes, ZapCall call, const Inspect& inspect) {
    check_range("linux_zap", bytes, chunk_bytes);
    Region region(bytes, "the zap range");
    populate(region.span());
    LinuxResult r;
    r.pages = bytes / kPageBytes;
    r.calls = bytes / chunk_bytes;
    const std::span<std::uint8_t> range = region.span();
    if (call == ZapCall::MadviseDontneed) {
        const auto start = Clock::now();
        for (std::uint64_t off = 0; off < bytes; off += chunk_bytes)
            if (::madvise(range.data() + off, chunk_bytes, MADV_DONTNEED) != 0) {
                const int err = errno;
                throw_errno(err, "madvise(MADV_DONTNEED) of " + format_size(chunk_bytes) + " at offset " + hex(off));
            }
        r.total_ns = ns_between(start, Clock::now());
    } else {
        std::uint8_t* const base = region.release();
        const auto start = Clock::now();
        for (std::uint64_t off = 0; off < bytes; off += chunk_bytes)
            if (::munmap(base + off, chunk_bytes) != 0) {
                const int err = errno;
                ::munmap(base + off, bytes - off);
                throw_errno(err, "munmap of " + format_size(chunk_bytes) + " at offset " + hex(off));
            }
        r.total_ns = ns_between(start, Clock::now());
    }
    if (inspect) inspect(range);
    return r;
}

LinuxResult linux_mprotect(std::uint64_t bytes, std::uint64_t chunk_bytes, const Inspect& inspect) {
    check_range("linux_mprotect", bytes, chunk_bytes);
    Region region(bytes, "the mprotect range");
    populate(region.span());
    LinuxResult r;
    for (const int prot : {PROT_READ, PROT_READ | PROT_WRITE}) {
        const auto start = Clock::now();
        for (std::uint64_t off = 0; off < bytes; off += chunk_bytes)
            if (::mprotect(region.data() + off, chunk_bytes, prot) != 0) {
                const int err = errno;
                throw_errno(err, std::string("mprotect(") + ((prot & PROT_WRITE) ? "PROT_READ | PROT_WRITE" : "PROT_READ") +
                                     ") of " + format_size(chunk_bytes) + " at offset " + hex(off));
            }
        r.total_ns += ns_between(start, Clock::now());
        r.pages += bytes / kPageBytes;
        r.calls += bytes / chunk_bytes;
        if (inspect) inspect(region.span());
    }
    return r;
}

} // namespace hv::bench

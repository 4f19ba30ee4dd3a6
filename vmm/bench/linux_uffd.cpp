// uffd_copy_faults (linux_baseline.hpp): demand paging by a userfaultfd
// handler thread, the user-space counterpart of our page-fault hypercall.
#include "vmm/bench/linux_baseline.hpp"
#include "vmm/bench/linux_baseline_rig.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/unique_fd.hpp"

#include <bit>
#include <cerrno>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace hv::bench {
namespace {

using namespace linux_rig;

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

} // namespace hv::bench

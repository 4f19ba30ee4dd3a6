// The Linux baselines that `vmm bench` sets next to our MMU: that each one
// did the work it reports (pages faulted with the right contents, dropped,
// unmapped, protected) and made the calls it counts, checked through the
// kernel's own view (mincore, /proc/self/maps, fault counts). No timings.
#include "tests/support/proc_maps.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/bench/linux_baseline.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace hv::bench;

namespace {

constexpr std::uint64_t MiB = 1ull << 20;

using hv::test::contains;

long minor_faults() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_minflt;
}

// Page by page, with no allocation that could map something into the hole.
bool fully_unmapped(std::span<const std::uint8_t> range) {
    for (std::uint64_t off = 0; off < range.size(); off += kPageBytes) {
        unsigned char vec = 0;
        if (::mincore(const_cast<std::uint8_t*>(range.data() + off), kPageBytes, &vec) == 0 || errno != ENOMEM)
            return false;
    }
    return true;
}

using hv::test::Vmas;
using hv::test::vmas_over;

doctest::Contains has(const std::string& text) { return doctest::Contains(text.c_str()); }

bool all_are(const std::vector<std::string>& perms, const std::string& want) {
    return !perms.empty() && std::all_of(perms.begin(), perms.end(), [&](const std::string& p) { return p == want; });
}

// Lowers RLIMIT_AS to just above what the process has mapped, for one scope.
class AddressSpaceLimit {
public:
    explicit AddressSpaceLimit(std::uint64_t headroom) {
        REQUIRE(::getrlimit(RLIMIT_AS, &saved_) == 0);
        std::ifstream status("/proc/self/status");
        std::uint64_t vm_kib = 0;
        for (std::string line; std::getline(status, line);)
            if (line.rfind("VmSize:", 0) == 0) vm_kib = std::stoull(line.substr(7));
        REQUIRE(vm_kib > 0);
        rlimit lowered = saved_;
        lowered.rlim_cur = vm_kib * 1024 + headroom;
        REQUIRE(::setrlimit(RLIMIT_AS, &lowered) == 0);
    }
    ~AddressSpaceLimit() { ::setrlimit(RLIMIT_AS, &saved_); }

private:
    rlimit saved_{};
};

// Runs uffd_copy_faults in a child whose seccomp filter answers userfaultfd
// with ENOSYS; returns what the child reported.
std::string uffd_under_seccomp_enosys() {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
        std::string out;
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
            out = "seccomp setup failed";
        } else {
            try {
                const LinuxResult r = uffd_copy_faults(16, 2);
                out = std::string(r.available ? "available" : "unavailable") + "|" + r.unavailable_reason + "|" +
                      std::to_string(r.pages);
            } catch (const std::exception& e) {
                out = std::string("threw: ") + e.what();
            }
        }
        const ssize_t n = ::write(fds[1], out.data(), out.size());
        ::_exit(n == static_cast<ssize_t>(out.size()) ? 0 : 1);
    }
    ::close(fds[1]);
    std::string got;
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    return got;
}

} // namespace

TEST_CASE("linux baseline: first touch faults every page of a disjoint split once, in 4 KiB faults") {
    struct Case {
        std::uint32_t threads;
        std::uint64_t pages;
    };
    // 1024 pages span two 2 MiB-aligned blocks: huge pages would show as far
    // fewer faults. 8 threads on 5 pages leaves some threads idle.
    for (const Case c : {Case{1, 1024}, Case{3, 1000}, Case{8, 5}, Case{1024, 2048}}) {
        CAPTURE(c.threads);
        CAPTURE(c.pages);
        const long faults_before = minor_faults();
        int inspected = 0;
        std::span<std::uint8_t> seen;
        const LinuxResult r = linux_first_touch(c.pages, c.threads, Sharing::Disjoint, [&](std::span<std::uint8_t> region) {
            ++inspected;
            seen = region;
            CHECK(minor_faults() - faults_before >= static_cast<long>(c.pages));
            REQUIRE(region.size() == c.pages * kPageBytes);
            CHECK(resident_pages(region) == c.pages);
            std::uint64_t written = 0;
            for (std::uint64_t p = 0; p < c.pages; ++p)
                written += region[p * kPageBytes] == 1 && region[p * kPageBytes + 1] == 0;
            CHECK(written == c.pages);
        });
        CHECK(inspected == 1);
        CHECK(fully_unmapped(seen));
        CHECK(r.available);
        CHECK(r.pages == c.pages);
        CHECK(r.calls == 0);
        CHECK(r.total_ns > 0);
    }
}

TEST_CASE("linux baseline: first touch with shared pages has every thread write every page") {
    constexpr std::uint32_t threads = 4;
    constexpr std::uint64_t pages = 600;
    const LinuxResult r = linux_first_touch(pages, threads, Sharing::Shared, [&](std::span<std::uint8_t> region) {
        CHECK(resident_pages(region) == pages);
        std::uint64_t complete = 0;
        for (std::uint64_t p = 0; p < pages; ++p) {
            const std::uint8_t* page = region.data() + p * kPageBytes;
            complete += page[0] == 1 && page[64] == 1 && page[128] == 1 && page[192] == 1 && page[256] == 0;
        }
        CHECK(complete == pages);
    });
    CHECK(r.pages == pages); // distinct pages, not pages * threads
}

TEST_CASE("linux baseline: uffd copy faults put the handler's pattern in every page a toucher read") {
    for (const std::uint32_t threads : {1u, 3u}) {
        CAPTURE(threads);
        constexpr std::uint64_t pages = 512;
        std::uint64_t wrong_bytes = 0, resident = 0;
        std::span<std::uint8_t> seen;
        const LinuxResult r = uffd_copy_faults(pages, threads, [&](std::span<std::uint8_t> region) {
            seen = region;
            resident = resident_pages(region);
            for (std::uint64_t p = 0; p < pages; ++p)
                for (std::size_t off = 0; off < kPageBytes; ++off)
                    wrong_bytes += region[p * kPageBytes + off] != uffd_pattern_byte(p, off);
        });
        if (!r.available) {
            CHECK((contains(r.unavailable_reason, "userfaultfd") || contains(r.unavailable_reason, "UFFDIO")));
            MESSAGE("skipped: userfaultfd unavailable here: " << r.unavailable_reason);
            return;
        }
        CHECK(r.pages == pages);
        CHECK(r.calls == pages); // one UFFDIO_COPY per page
        CHECK(resident == pages);
        CHECK(wrong_bytes == 0);
        CHECK(fully_unmapped(seen));
    }
}

TEST_CASE("linux baseline: uffd refused by the kernel is reported unavailable with the call and errno") {
    const std::string got = uffd_under_seccomp_enosys();
    CAPTURE(got);
    CHECK(got.rfind("unavailable|", 0) == 0);
    CHECK(contains(got, "userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY) failed"));
    CHECK(contains(got, "Function not implemented"));
    CHECK(got.substr(got.rfind('|')) == "|0");
}

TEST_CASE("linux baseline: madvise(DONTNEED) zap makes one call per chunk and drops every page") {
    constexpr std::uint64_t bytes = 8 * MiB;
    for (const std::uint64_t chunk : {kPageBytes, kHugeBytes}) {
        CAPTURE(chunk);
        const long faults_before = minor_faults();
        std::uint64_t resident = ~0ull, nonzero = 0;
        long populate_faults = 0;
        std::span<std::uint8_t> seen;
        const LinuxResult r = linux_zap(bytes, chunk, ZapCall::MadviseDontneed, [&](std::span<std::uint8_t> region) {
            seen = region;
            populate_faults = minor_faults() - faults_before; // before the reads below fault in zero pages
            resident = resident_pages(region);
            nonzero = static_cast<std::uint64_t>(std::count_if(region.begin(), region.end(), [](std::uint8_t b) { return b != 0; }));
        });
        CHECK(populate_faults >= static_cast<long>(bytes / kPageBytes));
        CHECK(resident == 0);
        CHECK(nonzero == 0);
        CHECK(r.pages == bytes / kPageBytes);
        CHECK(r.calls == bytes / chunk);
        CHECK(fully_unmapped(seen));
    }
}

TEST_CASE("linux baseline: munmap zap makes one call per chunk and leaves the range unmapped") {
    constexpr std::uint64_t bytes = 4 * MiB;
    for (const std::uint64_t chunk : {kPageBytes, kHugeBytes}) {
        CAPTURE(chunk);
        bool unmapped = false;
        std::span<std::uint8_t> seen;
        const LinuxResult r = linux_zap(bytes, chunk, ZapCall::Munmap, [&](std::span<std::uint8_t> region) {
            seen = region;
            unmapped = fully_unmapped(region);
        });
        CHECK(seen.size() == bytes);
        CHECK(unmapped);
        CHECK_THROWS_AS(resident_pages(seen), std::system_error);
        CHECK(r.pages == bytes / kPageBytes);
        CHECK(r.calls == bytes / chunk);
    }
}

TEST_CASE("linux baseline: mprotect makes the range read-only then writable again and keeps its pages") {
    constexpr std::uint64_t bytes = 4 * MiB;
    for (const std::uint64_t chunk : {kPageBytes, kHugeBytes}) {
        CAPTURE(chunk);
        std::vector<Vmas> passes;
        std::vector<std::uint64_t> resident;
        std::span<std::uint8_t> seen;
        const LinuxResult r = linux_mprotect(bytes, chunk, [&](std::span<std::uint8_t> region) {
            seen = region;
            passes.push_back(vmas_over(region));
            resident.push_back(resident_pages(region));
        });
        REQUIRE(passes.size() == 2);
        CHECK(all_are(passes[0].perms, "r--p"));
        CHECK(passes[0].covered == bytes);
        CHECK(all_are(passes[1].perms, "rw-p"));
        CHECK(passes[1].covered == bytes);
        CHECK(resident == std::vector<std::uint64_t>{bytes / kPageBytes, bytes / kPageBytes});
        CHECK(r.pages == 2 * bytes / kPageBytes);
        CHECK(r.calls == 2 * bytes / chunk);
        CHECK(fully_unmapped(seen));
    }
}

TEST_CASE("linux baseline: invalid arguments are refused with what was expected") {
    CHECK_THROWS_WITH_AS(linux_first_touch(0, 1, Sharing::Disjoint),
                         has("linux_first_touch: expected 1..1048576 pages, got 0"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(linux_first_touch(1048577, 1, Sharing::Shared),
                         has("expected 1..1048576 pages, got 1048577"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(linux_first_touch(16, 0, Sharing::Disjoint),
                         has("linux_first_touch: expected 1..1024 threads, got 0"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(uffd_copy_faults(16, 1025), has("uffd_copy_faults: expected 1..1024 threads, got 1025"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(uffd_copy_faults(0, 1), has("uffd_copy_faults: expected 1..1048576 pages, got 0"),
                         std::invalid_argument);
    const char* bytes_text = "expected bytes a non-zero multiple of 4096 up to 4 GiB, got ";
    CHECK_THROWS_WITH_AS(linux_zap(0, kPageBytes, ZapCall::Munmap), has(std::string("linux_zap: ") + bytes_text + "0"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(linux_zap(4097, kPageBytes, ZapCall::MadviseDontneed), has(bytes_text + std::string("4097")),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(linux_mprotect((4ull << 30) + kPageBytes, kPageBytes),
                         has(std::string("linux_mprotect: ") + bytes_text + "4294971392"), std::invalid_argument);
    const char* chunk_text = "expected chunk_bytes a non-zero multiple of 4096 dividing 6291456, got ";
    CHECK_THROWS_WITH_AS(linux_zap(6 * MiB, 0, ZapCall::Munmap), has(chunk_text + std::string("0")),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(linux_zap(6 * MiB, 100, ZapCall::Munmap), has(chunk_text + std::string("100")),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(linux_mprotect(6 * MiB, 4 * MiB), has(chunk_text + std::string("4194304")),
                         std::invalid_argument);
}

TEST_CASE("linux baseline: a mapping the host refuses is an error and not a crash") {
    std::string what;
    {
        const AddressSpaceLimit limit(32 * MiB);
        try {
            linux_zap(64 * MiB, kHugeBytes, ZapCall::MadviseDontneed);
        } catch (const std::system_error& e) {
            what = e.what();
        }
    }
    CHECK(contains(what, "mmap of 64 MiB for the zap range"));
    CHECK(contains(what, "Cannot allocate memory"));
    // With the limit lifted the call works again: the failure left nothing behind.
    CHECK(linux_zap(4 * MiB, kHugeBytes, ZapCall::MadviseDontneed).calls == 2);
}

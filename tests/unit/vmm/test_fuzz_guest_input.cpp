// `vmm fuzz-guest`: how an input becomes a VM configuration and the fuzz
// guest's command line (no KVM needed; the runs are the kvm.fuzz-guest.* tests).
#include "vmm/cli/fuzz_guest_command.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace hv;

TEST_CASE("fuzz-guest input: four configuration bytes pick vCPUs, lock, coherence and batch, each modulo its choices") {
    const std::vector<std::uint8_t> bytes = {3, 1, 2, 4, 0x10, 0x05};
    const FuzzGuestInput in = decode_fuzz_guest_input(bytes, "x");
    CHECK(in.cpus == 4);
    CHECK(in.lock == mmu::LockPolicy::Rw);
    CHECK(in.coherence == mmu::CoherencePolicy::RangeActive);
    CHECK(in.batch == 512);
    CHECK(in.program == std::vector<std::uint8_t>{0x10, 0x05});
    CHECK(describe(in) == "4 vCPUs, rw/range-active/batch 512, 1 operations");

    const FuzzGuestInput wrapped = decode_fuzz_guest_input(std::vector<std::uint8_t>{15, 5, 3, 11}, "x");
    CHECK(wrapped.cpus == 8);
    CHECK(wrapped.lock == mmu::LockPolicy::Split);
    CHECK(wrapped.coherence == mmu::CoherencePolicy::Seq);
    CHECK(wrapped.batch == 0);
    CHECK(describe(wrapped) == "8 vCPUs, split/seq/batch unlimited, 0 operations");
}

TEST_CASE("fuzz-guest input: missing configuration bytes count as 0 and an odd last program byte is dropped") {
    const FuzzGuestInput empty = decode_fuzz_guest_input({}, "x");
    CHECK(empty.cpus == 1);
    CHECK(empty.lock == mmu::LockPolicy::Global);
    CHECK(empty.coherence == mmu::CoherencePolicy::Seq);
    CHECK(empty.batch == 1);
    CHECK(empty.program.empty());
    const FuzzGuestInput odd = decode_fuzz_guest_input(std::vector<std::uint8_t>{0, 0, 0, 0, 1, 2, 3}, "x");
    CHECK(odd.program == std::vector<std::uint8_t>{1, 2});
}

TEST_CASE("fuzz-guest input: longer than the configuration and 1024 program bytes is refused") {
    const std::vector<std::uint8_t> most(FuzzGuestInput::kMaxInput, 0x21);
    CHECK(decode_fuzz_guest_input(most, "x").program.size() == 1024);
    const std::vector<std::uint8_t> too_long(FuzzGuestInput::kMaxInput + 1, 0);
    CHECK_THROWS_WITH_AS(decode_fuzz_guest_input(too_long, "in/big"),
                         "in/big: expected at most 1028 bytes (4 of configuration and a program of at most 1024), "
                         "found 1029",
                         VmmError);
}

TEST_CASE("fuzz-guest input: the run is shadow paging over 16 pages with the program as prog=HEX") {
    const FuzzGuestInput in = decode_fuzz_guest_input(std::vector<std::uint8_t>{1, 2, 1, 3, 0x0a, 0xf1, 0x3c, 0x00}, "x");
    const RunOptions opt = fuzz_guest_run_options(in, "/g/fuzz.elf", 30, true);
    CHECK(opt.image == "/g/fuzz.elf");
    CHECK(opt.cpus == 2);
    CHECK(opt.paging == RunOptions::Paging::Shadow);
    CHECK(opt.shadow.region_size == 16 * 4096);
    CHECK(opt.shadow.mmu.lock == mmu::LockPolicy::Split);
    CHECK(opt.shadow.mmu.coherence == mmu::CoherencePolicy::PtLock);
    CHECK(opt.shadow.mmu.batch == 64);
    CHECK(opt.shadow.skip_shootdown);
    CHECK(opt.timeout_seconds == 30);
    CHECK(opt.cmdline == "prog=0af13c00");
    // The longest program still fits the command line (4 KiB with its NUL).
    const FuzzGuestInput longest = decode_fuzz_guest_input(std::vector<std::uint8_t>(FuzzGuestInput::kMaxInput, 0xab), "x");
    CHECK(fuzz_guest_run_options(longest, "g", 1).cmdline.size() == 5 + 2048);
    CHECK_NOTHROW(validate_run_options(fuzz_guest_run_options(longest, "g", 1)));
}

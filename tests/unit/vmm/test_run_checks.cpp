// require_kvm_for_image (vmm/run/host_checks.hpp) over a fake /sys/module: a
// Linux bzImage is refused up front where KVM is kvm_pvm, which cannot boot a
// stock kernel, and let through everywhere else.
#include <doctest/doctest.h>

#include <string>

#include "tests/support/fake_sysfs.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/host_checks.hpp"

using hv::ImageKind;
using hv::test::contains;
using hv::test::message_of;

namespace {

// The message require_kvm_for_image throws, or "" when it lets the image through.
std::string refusal(ImageKind kind, const FakeSysfs& sys) {
    return message_of<hv::VmmError>([&] { hv::require_kvm_for_image(kind, "/boot/vmlinuz-test", sys.root.string()); });
}

} // namespace

TEST_CASE("require_kvm_for_image: a Linux kernel on kvm_pvm is refused, naming the KVM found and what it needs") {
    FakeSysfs sys;
    sys.param("kvm_pvm", "pvm_native", "Y\n");
    const std::string why = refusal(ImageKind::Linux, sys);
    CAPTURE(why);
    CHECK(contains(why, "'/boot/vmlinuz-test' is a Linux kernel"));
    CHECK(contains(why, "needs KVM on hardware virtualization (kvm_intel or kvm_amd)"));
    CHECK(contains(why, "this host has kvm_pvm"));
    CHECK(contains(why, "boots only kernels built as PVM guests"));
}

TEST_CASE("require_kvm_for_image: ELF and multiboot images run on kvm_pvm") {
    FakeSysfs sys;
    sys.param("kvm_pvm", "pvm_native", "Y\n");
    CHECK(refusal(ImageKind::Elf64, sys).empty());
    CHECK(refusal(ImageKind::Multiboot, sys).empty());
}

TEST_CASE("require_kvm_for_image: a Linux kernel passes on kvm_intel or kvm_amd, with or without TDP") {
    struct Vendor {
        const char *module, *param, *value;
    };
    for (const Vendor& v : {Vendor{"kvm_amd", "npt", "Y\n"}, Vendor{"kvm_amd", "npt", "N\n"},
                            Vendor{"kvm_intel", "ept", "Y\n"}, Vendor{"kvm_intel", "ept", "0\n"}}) {
        CAPTURE(v.module);
        CAPTURE(v.value);
        FakeSysfs sys;
        sys.param(v.module, v.param, v.value);
        CHECK(refusal(ImageKind::Linux, sys).empty());
        // A vendor module next to kvm_pvm is the KVM /dev/kvm belongs to (as tdp_status says).
        sys.param("kvm_pvm", "pvm_native", "N\n");
        CHECK(refusal(ImageKind::Linux, sys).empty());
    }
}

TEST_CASE("require_kvm_for_image: with no KVM module visible a Linux kernel is not refused") {
    FakeSysfs sys;
    CHECK(refusal(ImageKind::Linux, sys).empty());
    CHECK_NOTHROW(hv::require_kvm_for_image(ImageKind::Linux, "x", "/nonexistent/hv-test/sys/module"));
}

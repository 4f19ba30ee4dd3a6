#include "vmm/kvm/kvm.hpp"

#include "vmm/kvm/pc_wiring.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cerrno>
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/ioctl.h>

namespace hv {
namespace {

// The uapi header declares kvm_cpuid2's flexible array with
// __DECLARE_FLEX_ARRAY, which in C++ adds an empty struct: entries lands at
// offset 12 and sizeof is 12, so KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2 as
// compiled here encode a size the kernel rejects (EINVAL). Use the C layout:
// nent and padding (8 bytes), then the entries.
constexpr std::size_t kCpuid2HeaderSize = 8;
constexpr unsigned long kIoctlGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, kCpuid2HeaderSize);
constexpr unsigned long kIoctlSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, kCpuid2HeaderSize);
// The same for kvm_irq_routing: nr and flags, then the entries.
constexpr std::size_t kIrqRoutingHeaderSize = 8;
constexpr unsigned long kIoctlSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, kIrqRoutingHeaderSize);

std::string errno_text(const char* what) { return std::string(what) + " failed: " + std::strerror(errno); }

int checked_ioctl(int fd, unsigned long request, const char* name, unsigned long arg = 0) {
    int r = ::ioctl(fd, request, arg);
    if (r < 0) throw VmmError(errno_text(name));
    return r;
}
template <class T>
int checked_ioctl_ptr(int fd, unsigned long request, const char* name, T* arg) {
    int r = ::ioctl(fd, request, arg);
    if (r < 0) throw VmmError(errno_text(name));
    return r;
}

} // namespace

const std::vector<KvmCapability>& required_capabilities() {
    static const std::vector<KvmCapability> caps = {
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM from a host mapping"},
        {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2"},
        {KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS", "registers in kvm_run on every exit"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping vCPU threads without races"},
        {KVM_CAP_NR_VCPUS, "KVM_CAP_NR_VCPUS", "the recommended vCPU count"},
        {KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS", "the vCPU limit checked against --cpus"},
    };
    return caps;
}

std::vector<kvm_cpuid_entry2> CpuidTable::for_vcpu(std::uint32_t vcpu) const {
    std::vector<kvm_cpuid_entry2> out = entries_;
    for (auto& e : out) {
        if (e.function == 1) e.ebx = (e.ebx & 0x00ffffffu) | ((vcpu & 0xffu) << 24);
        if (e.function == 0xb || e.function == 0x1f) e.edx = vcpu;
    }
    return out;
}

bool Kvm::available(std::string* reason, const char* path) {
    int fd = ::open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (reason) {
            *reason = std::string("cannot open ") + path + ": " + std::strerror(errno);
            if (errno == ENOENT) *reason += " (no KVM on this host: load kvm_intel/kvm_amd, or use scripts/nested-kvm.sh)";
            if (errno == EACCES) *reason += " (add yourself to the kvm group)";
        }
        return false;
    }
    ::close(fd);
    return true;
}

Kvm Kvm::open(const char* path) {
    std::string reason;
    int fd = ::open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        available(&reason, path);
        throw VmmError(reason);
    }
    Kvm kvm{UniqueFd(fd)};
    const int version = kvm.api_version();
    if (version != KVM_API_VERSION)
        throw VmmError("KVM API version " + std::to_string(version) + ", expected " + std::to_string(KVM_API_VERSION));
    return kvm;
}

int Kvm::api_version() const { return checked_ioctl(fd(), KVM_GET_API_VERSION, "KVM_GET_API_VERSION"); }

int Kvm::check_extension(int cap) const {
    int r = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

const std::vector<KvmCapability>& pc_platform_capabilities() {
    static const std::vector<KvmCapability> caps = {
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "the in-kernel PIC, IOAPIC and local APICs"},
        {KVM_CAP_PIT2, "KVM_CAP_PIT2", "the in-kernel PIT"},
        {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "real mode for the application processors' SIPI start"},
        {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING", "the PIT on IOAPIC pin 2, as on a PC"},
        {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "which vCPUs wait for INIT/SIPI or halted"},
        {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS", "whether an NMI waits for a halted vCPU"},
    };
    return caps;
}

void Kvm::require_capabilities(const std::vector<KvmCapability>& caps) const {
    std::string missing;
    for (const auto& c : caps)
        if (!check_extension(c.id)) missing += std::string(missing.empty() ? "" : ", ") + c.name + " (" + c.why + ")";
    if (!missing.empty()) throw VmmError("KVM lacks required capabilities: " + missing);
}

unsigned Kvm::max_vcpus() const {
    int max = check_extension(KVM_CAP_MAX_VCPUS);
    if (max <= 0) max = check_extension(KVM_CAP_NR_VCPUS);
    return max > 0 ? static_cast<unsigned>(max) : 4u; // api.rst: assume 4 when neither answers
}

std::size_t Kvm::vcpu_mmap_size() const {
    return static_cast<std::size_t>(checked_ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE"));
}

CpuidTable Kvm::supported_cpuid() const {
    for (std::size_t n = 64;; n *= 2) {
        std::vector<std::uint8_t> buf(kCpuid2HeaderSize + n * sizeof(kvm_cpuid_entry2));
        const auto nent_in = static_cast<std::uint32_t>(n);
        std::memcpy(buf.data(), &nent_in, sizeof nent_in);
        if (::ioctl(fd(), kIoctlGetSupportedCpuid, buf.data()) == 0) {
            std::uint32_t nent = 0;
            std::memcpy(&nent, buf.data(), sizeof nent);
            std::vector<kvm_cpuid_entry2> entries(std::min<std::size_t>(nent, n));
            std::memcpy(entries.data(), buf.data() + kCpuid2HeaderSize, entries.size() * sizeof(kvm_cpuid_entry2));
            return CpuidTable(std::move(entries));
        }
        if (errno != E2BIG || n > 4096) throw VmmError(errno_text("KVM_GET_SUPPORTED_CPUID"));
    }
}

KvmVm::KvmVm(const Kvm& kvm) : fd_(checked_ioctl(kvm.fd(), KVM_CREATE_VM, "KVM_CREATE_VM")) {}

void KvmVm::set_user_memory(std::uint32_t slot, std::uint64_t gpa, std::uint64_t size, void* host) {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.guest_phys_addr = gpa;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(host);
    checked_ioctl_ptr(fd(), KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region);
}

void KvmVm::set_tss_addr(std::uint64_t gpa) { checked_ioctl(fd(), KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", gpa); }

namespace {

kvm_irq_routing_entry irqchip_route(std::uint32_t gsi, std::uint32_t chip, std::uint32_t pin) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_IRQCHIP;
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    return e;
}

} // namespace

void KvmVm::create_pc_irqchip() {
    checked_ioctl(fd(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP");
    using namespace pc_wiring;
    std::vector<kvm_irq_routing_entry> routes;
    for (std::uint32_t gsi = 0; gsi < kIsaIrqs; ++gsi)
        routes.push_back(irqchip_route(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8));
    for (std::uint32_t gsi = 0; gsi < kIoApicPins; ++gsi)
        if (gsi != kCascadeIrq) routes.push_back(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi == kPitIrq ? kPitIoApicPin : gsi));
    // kvm_irq_routing in its C layout (see kIrqRoutingHeaderSize): nr, flags, entries.
    std::vector<std::uint8_t> buf(kIrqRoutingHeaderSize + routes.size() * sizeof(kvm_irq_routing_entry));
    const auto nr = static_cast<std::uint32_t>(routes.size());
    std::memcpy(buf.data(), &nr, sizeof nr);
    std::memcpy(buf.data() + kIrqRoutingHeaderSize, routes.data(), routes.size() * sizeof(kvm_irq_routing_entry));
    checked_ioctl_ptr(fd(), kIoctlSetGsiRouting, "KVM_SET_GSI_ROUTING", buf.data());
    // The PIT raises GSI 0. KVM_PIT_SPEAKER_DUMMY also gives it port 0x61,
    // whose bit 5 shows channel 2's output: Linux times its TSC calibration
    // by it, and without it gives up ("Unable to calibrate against PIT").
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    checked_ioctl_ptr(fd(), KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &pit);
}

void KvmVm::set_irq_line(std::uint32_t gsi, bool level) {
    kvm_irq_level irq{};
    irq.irq = gsi;
    irq.level = level ? 1 : 0;
    checked_ioctl_ptr(fd(), KVM_IRQ_LINE, "KVM_IRQ_LINE", &irq);
}

bool KvmVm::enable_x2apic_api(const Kvm& kvm) {
    constexpr std::uint64_t kWanted = KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;
    const int supported = kvm.check_extension(KVM_CAP_X2APIC_API);
    if (supported <= 0 || (static_cast<std::uint64_t>(supported) & kWanted) != kWanted) return false;
    kvm_enable_cap cap{};
    cap.cap = KVM_CAP_X2APIC_API;
    cap.args[0] = kWanted;
    checked_ioctl_ptr(fd(), KVM_ENABLE_CAP, "KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)", &cap);
    return true;
}

std::unique_ptr<KvmVcpu> KvmVm::create_vcpu(std::uint32_t index, std::size_t run_size) {
    int fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
    if (fd < 0) throw VmmError("KVM_CREATE_VCPU " + std::to_string(index) + " failed: " + std::strerror(errno));
    return std::make_unique<KvmVcpu>(UniqueFd(fd), run_size, index);
}

KvmVcpu::KvmVcpu(UniqueFd fd, std::size_t run_size, std::uint32_t index)
    : fd_(std::move(fd)), run_map_(Mapping::shared_fd(fd_.get(), run_size, "the vCPU's kvm_run")), index_(index) {}

kvm_regs KvmVcpu::get_regs() const {
    kvm_regs regs{};
    checked_ioctl_ptr(fd(), KVM_GET_REGS, "KVM_GET_REGS", &regs);
    return regs;
}
void KvmVcpu::set_regs(const kvm_regs& regs) {
    checked_ioctl_ptr(fd(), KVM_SET_REGS, "KVM_SET_REGS", const_cast<kvm_regs*>(&regs));
}
kvm_sregs KvmVcpu::get_sregs() const {
    kvm_sregs sregs{};
    checked_ioctl_ptr(fd(), KVM_GET_SREGS, "KVM_GET_SREGS", &sregs);
    return sregs;
}
void KvmVcpu::set_sregs(const kvm_sregs& sregs) {
    checked_ioctl_ptr(fd(), KVM_SET_SREGS, "KVM_SET_SREGS", const_cast<kvm_sregs*>(&sregs));
}
void KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
    std::vector<std::uint8_t> buf(kCpuid2HeaderSize + entries.size() * sizeof(kvm_cpuid_entry2));
    const auto nent = static_cast<std::uint32_t>(entries.size());
    std::memcpy(buf.data(), &nent, sizeof nent);
    std::memcpy(buf.data() + kCpuid2HeaderSize, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
    checked_ioctl_ptr(fd(), kIoctlSetCpuid2, "KVM_SET_CPUID2", buf.data());
}
void KvmVcpu::set_fpu_defaults() {
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;     // x87 default control word: all exceptions masked
    fpu.mxcsr = 0x1f80;  // SSE default: all exceptions masked, round to nearest
    checked_ioctl_ptr(fd(), KVM_SET_FPU, "KVM_SET_FPU", &fpu);
}
void KvmVcpu::nmi() { checked_ioctl(fd(), KVM_NMI, "KVM_NMI"); }
std::uint64_t KvmVcpu::tsc_khz() const {
    const int r = ::ioctl(fd(), KVM_GET_TSC_KHZ, 0);
    return r > 0 ? static_cast<std::uint64_t>(r) : 0;
}
std::uint32_t KvmVcpu::mp_state() const {
    kvm_mp_state state{};
    checked_ioctl_ptr(fd(), KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &state);
    return state.mp_state;
}
void KvmVcpu::set_mp_state(std::uint32_t state) {
    kvm_mp_state s{};
    s.mp_state = state;
    checked_ioctl_ptr(fd(), KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &s);
}
bool KvmVcpu::nmi_pending() const {
    kvm_vcpu_events events{};
    checked_ioctl_ptr(fd(), KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &events);
    return events.nmi.pending || events.nmi.injected;
}
int KvmVcpu::enter() {
    int r = ::ioctl(fd(), KVM_RUN, 0);
    return r < 0 ? -errno : 0;
}

TdpStatus tdp_status(const std::string& sysfs_root) {
    for (const auto& [module, param] : {std::pair{"kvm_intel", "ept"}, std::pair{"kvm_amd", "npt"}}) {
        std::ifstream f(sysfs_root + "/" + module + "/parameters/" + param);
        std::string value;
        if (f && std::getline(f, value)) {
            TdpStatus s;
            s.module = module;
            s.parameter = param;
            s.enabled = value == "Y" || value == "1" || value == "y";
            return s;
        }
    }
    // PVM (a KVM that needs no hardware virtualization, as in some nested
    // sandboxes) always shadows the guest's page tables: it has no TDP.
    if (std::ifstream(sysfs_root + "/kvm_pvm/parameters/pvm_native") || std::ifstream(sysfs_root + "/kvm_pvm/refcnt"))
        return {"kvm_pvm", "", false};
    return {};
}

} // namespace hv

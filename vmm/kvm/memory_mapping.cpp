#include "vmm/kvm/memory_mapping.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace hv {

Mapping Mapping::anonymous(std::size_t size, const char* what) {
    const auto refused = [&] {
        return VmmError(std::string("cannot map ") + format_size(size) + " for " + what + ": " + std::strerror(errno));
    };
    const std::size_t guard = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (size > SIZE_MAX - 2 * guard) {
        errno = ENOMEM;
        throw refused();
    }
    // Reserve the whole span inaccessible, then open the middle: the guard
    // pages cost no memory.
    void* p = ::mmap(nullptr, size + 2 * guard, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw refused();
    auto* inside = static_cast<std::uint8_t*>(p) + guard;
    if (size != 0 && ::mprotect(inside, size, PROT_READ | PROT_WRITE) != 0) {
        const int e = errno;
        ::munmap(p, size + 2 * guard);
        errno = e;
        throw refused();
    }
    return Mapping(inside, size, guard);
}

Mapping Mapping::shared_fd(int fd, std::size_t size, const char* what) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        throw VmmError(std::string("cannot map ") + what + ": " + std::strerror(errno));
    return Mapping(p, size);
}

void Mapping::unmap() {
    if (base_) ::munmap(static_cast<std::uint8_t*>(base_) - guard_, size_ + 2 * guard_);
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        unmap();
        base_ = std::exchange(other.base_, nullptr);
        size_ = std::exchange(other.size_, 0);
        guard_ = std::exchange(other.guard_, 0);
    }
    return *this;
}

Mapping::~Mapping() { unmap(); }

} // namespace hv

#include "mapping.hpp"

#include "format.hpp"
#include "vmm_error.hpp"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>

namespace hv {

Mapping Mapping::anonymous(std::size_t size, const char* what) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw VmmError(std::string("cannot map ") + format_size(size) + " for " + what + ": " +
                       std::strerror(errno));
    return Mapping(p, size);
}

Mapping Mapping::shared_fd(int fd, std::size_t size, const char* what) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        throw VmmError(std::string("cannot map ") + what + ": " + std::strerror(errno));
    return Mapping(p, size);
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        if (base_) ::munmap(base_, size_);
        base_ = std::exchange(other.base_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

Mapping::~Mapping() {
    if (base_) ::munmap(base_, size_);
}

} // namespace hv

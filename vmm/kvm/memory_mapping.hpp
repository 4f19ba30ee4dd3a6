#pragma once
// Owning memory mapping: munmap on destruction, movable, not copyable.
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace hv {

class Mapping {
public:
    Mapping() = default;
    // Anonymous private read/write memory between two inaccessible guard
    // pages, so that an access running off either end (a bounds check
    // missed somewhere) faults instead of reaching other memory. Throws
    // VmmError naming the size and errno when the host refuses it.
    static Mapping anonymous(std::size_t size, const char* what);
    // Maps `size` bytes of fd at offset 0 shared read/write (the vCPU's kvm_run).
    static Mapping shared_fd(int fd, std::size_t size, const char* what);

    Mapping(Mapping&& other) noexcept
        : base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)),
          guard_(std::exchange(other.guard_, 0)) {}
    Mapping& operator=(Mapping&& other) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();

    std::uint8_t* data() const { return static_cast<std::uint8_t*>(base_); }
    std::size_t size() const { return size_; }
    std::span<std::uint8_t> bytes() const { return {data(), size_}; }

private:
    Mapping(void* base, std::size_t size, std::size_t guard = 0) : base_(base), size_(size), guard_(guard) {}
    void unmap();
    void* base_ = nullptr;
    std::size_t size_ = 0;
    std::size_t guard_ = 0; // bytes of PROT_NONE before base_ and after base_ + size_
};

} // namespace hv

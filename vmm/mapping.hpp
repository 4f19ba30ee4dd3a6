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
    // Anonymous private read/write memory; throws VmmError naming the size
    // and errno when the host refuses it.
    static Mapping anonymous(std::size_t size, const char* what);
    // Maps `size` bytes of fd at offset 0 shared read/write (the vCPU's kvm_run).
    static Mapping shared_fd(int fd, std::size_t size, const char* what);

    Mapping(Mapping&& other) noexcept
        : base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    Mapping& operator=(Mapping&& other) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();

    std::uint8_t* data() const { return static_cast<std::uint8_t*>(base_); }
    std::size_t size() const { return size_; }
    std::span<std::uint8_t> bytes() const { return {data(), size_}; }

private:
    Mapping(void* base, std::size_t size) : base_(base), size_(size) {}
    void* base_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace hv

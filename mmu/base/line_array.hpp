#pragma once
// LineArray<T>: a fixed-size, value-initialised array whose first element
// starts a 64-byte cache line. For the arrays indexed by frame number (rmap
// heads and locks, PT locks, map counts, shootdown masks): FrameSpace hands
// a CPU whole chunks of kFrameChunk frames aligned to kFrameChunk, so with
// line-aligned arrays every line of per-frame data for such a chunk holds
// that chunk's frames only (see FrameSpace::line_owner).
#include <cstddef>
#include <memory>
#include <new>

namespace hv::mmu {

inline constexpr std::size_t kCacheLine = 64;

template <class T>
class LineArray {
public:
    explicit LineArray(std::size_t n)
        : data_(static_cast<T*>(::operator new(n * sizeof(T) + (n == 0), std::align_val_t{kCacheLine}))), size_(n) {
        try {
            std::uninitialized_value_construct_n(data_, n);
        } catch (...) {
            ::operator delete(data_, std::align_val_t{kCacheLine});
            throw;
        }
    }
    ~LineArray() {
        std::destroy_n(data_, size_);
        ::operator delete(data_, std::align_val_t{kCacheLine});
    }
    LineArray(const LineArray&) = delete;
    LineArray& operator=(const LineArray&) = delete;

    T& operator[](std::size_t i) const { return data_[i]; }
    std::size_t size() const { return size_; }

private:
    T* data_;
    std::size_t size_;
};

} // namespace hv::mmu

#pragma once
// Sources of choices for generators of test inputs:
//   RandomChoices  a seeded std::mt19937_64 (unit tests: reproducible by seed)
//   ByteChoices    a fuzzer's input bytes, read front to back (a crash
//                  replays from its input file alone)
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>

namespace hv::mmu {

// Choices from a seeded generator.
class RandomChoices {
public:
    explicit RandomChoices(std::uint64_t seed) : rng_(seed) {}
    // Uniform in [0, n); n > 0.
    std::uint64_t below(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }

private:
    std::mt19937_64 rng_;
};

// Choices read from bytes: below(n) takes one byte when n <= 256, else
// eight, and reduces them modulo n; word() takes eight. Past the end every
// choice is 0, and exhausted() says so, so a caller stops instead of
// repeating the same choice forever.
class ByteChoices {
public:
    explicit ByteChoices(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
    std::uint64_t below(std::uint64_t n) {
        const std::size_t want = n <= 256 ? 1 : 8;
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < want && at_ < bytes_.size(); ++i) v = (v << 8) | bytes_[at_++];
        return v % n;
    }
    // Eight bytes as one word (zero-filled past the end).
    std::uint64_t word() {
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | (at_ < bytes_.size() ? bytes_[at_++] : 0);
        return v;
    }
    bool exhausted() const { return at_ >= bytes_.size(); }
    std::size_t consumed() const { return at_; }

private:
    std::span<const std::uint8_t> bytes_;
    std::size_t at_ = 0;
};

} // namespace hv::mmu

#pragma once
// Typed reads of a BenchReport's cells for the bench tests; a cell of
// another type throws std::bad_variant_access, which fails the test.
#include "vmm/bench/bench_report.hpp"

#include <cstdint>
#include <string>

namespace bench_cells {

inline std::uint64_t u(const hv::bench::BenchReport& r, std::size_t row, const char* col) {
    return std::get<std::uint64_t>(r.at(row, col));
}
inline double d(const hv::bench::BenchReport& r, std::size_t row, const char* col) {
    return std::get<double>(r.at(row, col));
}
inline std::string s(const hv::bench::BenchReport& r, std::size_t row, const char* col) {
    return std::get<std::string>(r.at(row, col));
}

} // namespace bench_cells

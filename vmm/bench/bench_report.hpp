#pragma once
// The results of one `vmm bench` experiment: named columns, one row per
// measured configuration, rendered as an aligned table for the terminal and
// written as JSON (for scripts/plot) and CSV (for spreadsheets). Metadata
// (machine, date, commands) travels in the JSON so that a figure can always
// be traced to where and how it was measured.
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace hv::bench {

using Cell = std::variant<std::string, std::uint64_t, double>;

struct Column {
    std::string name;
    int precision = 0; // digits after the point for doubles in the table (JSON and CSV keep full precision)
};

class BenchReport {
public:
    BenchReport(std::string experiment, std::vector<Column> columns);

    void set_meta(const std::string& key, std::string value);
    // Throws std::invalid_argument when the row does not have one cell per column.
    void add_row(std::vector<Cell> row);

    const std::string& experiment() const { return experiment_; }
    const std::vector<Column>& columns() const { return columns_; }
    const std::vector<std::vector<Cell>>& rows() const { return rows_; }
    const std::vector<std::pair<std::string, std::string>>& meta() const { return meta_; }
    // The cell of `column` in row `row`; throws std::out_of_range for an unknown column.
    const Cell& at(std::size_t row, const std::string& column) const;

    std::string table() const;
    std::string json() const;
    std::string csv() const;

private:
    std::string experiment_;
    std::vector<Column> columns_;
    std::vector<std::pair<std::string, std::string>> meta_;
    std::vector<std::vector<Cell>> rows_;
};

// Median and range of repeated measurements (the median of an even count is
// the mean of the middle two). Throws std::invalid_argument when empty.
struct Summary {
    double median = 0, min = 0, max = 0;
};
Summary summarize(std::vector<double> samples);

} // namespace hv::bench

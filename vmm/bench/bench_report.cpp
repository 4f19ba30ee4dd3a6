#include "vmm/bench/bench_report.hpp"

#include "vmm/kvm/text_format.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace hv::bench {

namespace {

std::string format_double(double v, int precision) {
    if (!std::isfinite(v)) return "nan";
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", precision, v);
    return b;
}

// Full precision, shortest form; JSON has no NaN, so it becomes null there.
std::string exact_double(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.17g", v);
    return b;
}

std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string out = "\"";
    for (const char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

bool is_text(const Cell& c) { return std::holds_alternative<std::string>(c); }

std::string table_text(const Cell& c, int precision) {
    if (const auto* s = std::get_if<std::string>(&c)) return *s;
    if (const auto* u = std::get_if<std::uint64_t>(&c)) return std::to_string(*u);
    return format_double(std::get<double>(c), precision);
}

std::string json_value(const Cell& c) {
    if (const auto* s = std::get_if<std::string>(&c)) return json_string(*s);
    if (const auto* u = std::get_if<std::uint64_t>(&c)) return std::to_string(*u);
    const double d = std::get<double>(c);
    return std::isfinite(d) ? exact_double(d) : "null";
}

std::string csv_value(const Cell& c) {
    if (const auto* s = std::get_if<std::string>(&c)) return csv_field(*s);
    if (const auto* u = std::get_if<std::uint64_t>(&c)) return std::to_string(*u);
    const double d = std::get<double>(c);
    return std::isfinite(d) ? exact_double(d) : "";
}

} // namespace

BenchReport::BenchReport(std::string experiment, std::vector<Column> columns)
    : experiment_(std::move(experiment)), columns_(std::move(columns)) {}

void BenchReport::set_meta(const std::string& key, std::string value) {
    for (auto& [k, v] : meta_)
        if (k == key) {
            v = std::move(value);
            return;
        }
    meta_.emplace_back(key, std::move(value));
}

void BenchReport::add_row(std::vector<Cell> row) {
    if (row.size() != columns_.size())
        throw std::invalid_argument("bench report '" + experiment_ + "': expected " + std::to_string(columns_.size()) +
                                    " cells in a row, got " + std::to_string(row.size()));
    rows_.push_back(std::move(row));
}

const Cell& BenchReport::at(std::size_t row, const std::string& column) const {
    for (std::size_t k = 0; k < columns_.size(); ++k)
        if (columns_[k].name == column) return rows_.at(row).at(k);
    throw std::out_of_range("bench report '" + experiment_ + "' has no column '" + column + "'");
}

// Text left-aligned, numbers right-aligned, two spaces between columns.
std::string BenchReport::table() const {
    std::vector<std::size_t> width(columns_.size());
    std::vector<std::vector<std::string>> text(rows_.size());
    for (std::size_t k = 0; k < columns_.size(); ++k) width[k] = columns_[k].name.size();
    for (std::size_t r = 0; r < rows_.size(); ++r)
        for (std::size_t k = 0; k < columns_.size(); ++k) {
            text[r].push_back(table_text(rows_[r][k], columns_[k].precision));
            width[k] = std::max(width[k], text[r][k].size());
        }
    auto line = [&](auto&& cell, auto&& right) {
        std::string out;
        for (std::size_t k = 0; k < columns_.size(); ++k) {
            const std::string s = cell(k);
            const std::string pad(width[k] - s.size(), ' ');
            out += (k ? "  " : "") + (right(k) ? pad + s : s + (k + 1 < columns_.size() ? pad : ""));
        }
        return out + "\n";
    };
    std::string out = line([&](std::size_t k) { return columns_[k].name; },
                           [&](std::size_t k) { return !rows_.empty() && !is_text(rows_[0][k]); });
    for (std::size_t r = 0; r < rows_.size(); ++r)
        out += line([&](std::size_t k) { return text[r][k]; }, [&](std::size_t k) { return !is_text(rows_[r][k]); });
    return out;
}

std::string BenchReport::json() const {
    std::string out = "{\n  \"experiment\": " + json_string(experiment_) + ",\n  \"meta\": {";
    for (std::size_t i = 0; i < meta_.size(); ++i)
        out += (i ? ", " : "") + json_string(meta_[i].first) + ": " + json_string(meta_[i].second);
    out += "},\n  \"columns\": [";
    for (std::size_t k = 0; k < columns_.size(); ++k) out += (k ? ", " : "") + json_string(columns_[k].name);
    out += "],\n  \"rows\": [";
    for (std::size_t r = 0; r < rows_.size(); ++r) {
        out += r ? ",\n    {" : "\n    {";
        for (std::size_t k = 0; k < columns_.size(); ++k)
            out += (k ? ", " : "") + json_string(columns_[k].name) + ": " + json_value(rows_[r][k]);
        out += "}";
    }
    return out + (rows_.empty() ? "]\n}\n" : "\n  ]\n}\n");
}

std::string BenchReport::csv() const {
    std::string out;
    for (std::size_t k = 0; k < columns_.size(); ++k) out += (k ? "," : "") + csv_field(columns_[k].name);
    out += "\n";
    for (const auto& row : rows_) {
        for (std::size_t k = 0; k < row.size(); ++k) out += (k ? "," : "") + csv_value(row[k]);
        out += "\n";
    }
    return out;
}

Summary summarize(std::vector<double> samples) {
    if (samples.empty()) throw std::invalid_argument("summarize: expected at least one sample, got none");
    std::sort(samples.begin(), samples.end());
    const std::size_t n = samples.size();
    const double median = n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
    return {median, samples.front(), samples.back()};
}

} // namespace hv::bench

// hv::parse_size / format_size / hex / format_vcpu_list / json_string: the
// CLI's --mem parser, and the sizes, addresses, vCPU lists and JSON strings
// the VMM prints.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/kvm/text_format.hpp"

using hv::format_size;
using hv::hex;
using hv::parse_size;

namespace {
constexpr std::uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;
} // namespace

TEST_CASE("parse_size: plain byte counts") {
    CHECK(parse_size("0") == std::optional<std::uint64_t>(0));
    CHECK(parse_size("1") == std::optional<std::uint64_t>(1));
    CHECK(parse_size("4096") == std::optional<std::uint64_t>(4096));
    CHECK(parse_size("007") == std::optional<std::uint64_t>(7));
    CHECK(parse_size("4096B") == std::optional<std::uint64_t>(4096));
    CHECK(parse_size("4096b") == std::optional<std::uint64_t>(4096));
    CHECK(parse_size("0K") == std::optional<std::uint64_t>(0));
}

TEST_CASE("parse_size: binary unit suffixes K/M/G/T") {
    CHECK(parse_size("512K") == 512 * KiB);
    CHECK(parse_size("64M") == 64 * MiB);
    CHECK(parse_size("2G") == 2 * GiB);
    CHECK(parse_size("1T") == TiB);
    CHECK(parse_size("3T") == 3 * TiB);
}

TEST_CASE("parse_size: units are case-insensitive and take an optional B / iB") {
    for (const char* text : {"64M", "64m", "64MB", "64mb", "64Mb", "64MiB", "64mib", "64miB"}) {
        CAPTURE(text);
        CHECK(parse_size(text) == 64 * MiB);
    }
    CHECK(parse_size("1KiB") == KiB);
    CHECK(parse_size("1GiB") == GiB);
    CHECK(parse_size("1TiB") == TiB);
    CHECK(parse_size("1kB") == KiB);
}

// The header promises case-insensitive units with an optional "iB", so the
// all-capitals spelling users type with caps lock ("64MIB") must parse too.
TEST_CASE("parse_size: the iB suffix is case-insensitive too (64MIB, 2GIb)") {
    CHECK(parse_size("64MIB") == 64 * MiB);
    CHECK(parse_size("2GIb") == 2 * GiB);
}

TEST_CASE("parse_size: syntax errors are rejected") {
    for (const char* text : {"", " ", "M", "K64", "-1", "+1", " 64M", "64M ", "64 M", "1.5G", "0x10", "64X",
                             "64KK", "64MiBB", "64MiBx", "64iB", "64Bi", "64BB", "12abc", "64MB2", "1e6"}) {
        CAPTURE(text);
        CHECK_FALSE(parse_size(text).has_value());
    }
}

TEST_CASE("parse_size: overflow is rejected, the largest values are not") {
    // 2^64 - 1 = 18446744073709551615.
    CHECK(parse_size("18446744073709551615") == UINT64_MAX);
    CHECK_FALSE(parse_size("18446744073709551616").has_value());
    CHECK_FALSE(parse_size("99999999999999999999").has_value());
    CHECK_FALSE(parse_size("184467440737095516150").has_value());
    // T shifts by 40: the largest count is (2^64 - 1) >> 40 = 2^24 - 1 = 16777215.
    CHECK(parse_size("16777215T") == (std::uint64_t{16777215} << 40));
    CHECK_FALSE(parse_size("16777216T").has_value()); // exactly 2^64
    // G shifts by 30: (2^64 - 1) >> 30 = 2^34 - 1 = 17179869183.
    CHECK(parse_size("17179869183G") == (std::uint64_t{17179869183} << 30));
    CHECK_FALSE(parse_size("17179869184G").has_value());
    // K: 2^54 is the first count that overflows.
    CHECK_FALSE(parse_size("18014398509481984K").has_value());
    CHECK(parse_size("18014398509481983K") == (std::uint64_t{18014398509481983} << 10));
}

TEST_CASE("format_size: bytes below 1 KiB are printed as bytes") {
    CHECK(format_size(0) == "0 bytes");
    CHECK(format_size(1).starts_with("1 byte"));
    CHECK(format_size(1023) == "1023 bytes");
}

TEST_CASE("format_size: whole binary units print without a fraction") {
    CHECK(format_size(KiB) == "1 KiB");
    CHECK(format_size(4096) == "4 KiB");
    CHECK(format_size(64 * MiB) == "64 MiB");
    CHECK(format_size(128 * MiB) == "128 MiB");
    CHECK(format_size(4 * GiB) == "4 GiB");
    CHECK(format_size(64 * GiB) == "64 GiB");
    CHECK(format_size(2 * TiB) == "2 TiB");
    CHECK(format_size(TiB * 1024) == "1 PiB");
    CHECK(format_size(TiB * 1024 * 1024) == "1 EiB");
    CHECK(format_size(std::uint64_t{8} << 60) == "8 EiB"); // EiB is the largest unit
}

TEST_CASE("format_size: fractions print with one decimal") {
    CHECK(format_size(KiB + KiB / 2) == "1.5 KiB");
    CHECK(format_size(GiB + GiB / 2) == "1.5 GiB");
    CHECK(format_size(2 * MiB + 300 * KiB) == "2.3 MiB"); // 2.29296875 MiB
    CHECK(format_size(16 * KiB + 512) == "16.5 KiB");
}

TEST_CASE("format_size round-trips what parse_size reads for whole units") {
    for (const char* text : {"4K", "64M", "2G", "1T"}) {
        CAPTURE(text);
        const auto bytes = parse_size(text);
        REQUIRE(bytes);
        const std::string printed = format_size(*bytes);
        // "64 MiB" -> "64MiB" parses back to the same value.
        std::string compact = printed;
        compact.erase(compact.find(' '), 1);
        CHECK(parse_size(compact) == bytes);
    }
}

TEST_CASE("hex: lower-case with 0x prefix and no padding") {
    CHECK(hex(0) == "0x0");
    CHECK(hex(1) == "0x1");
    CHECK(hex(0x1f) == "0x1f");
    CHECK(hex(0xABCDEF) == "0xabcdef");
    CHECK(hex(0x100000) == "0x100000");
    CHECK(hex(UINT64_MAX) == "0xffffffffffffffff");
    CHECK(hex(std::uint64_t{1} << 63) == "0x8000000000000000");
}

TEST_CASE("format_vcpu_list: runs of consecutive indices collapse") {
    CHECK(hv::format_vcpu_list(std::vector<std::uint32_t>{}) == "");
    CHECK(hv::format_vcpu_list(std::vector<std::uint32_t>{3}) == "3");
    CHECK(hv::format_vcpu_list(std::vector<std::uint32_t>{1, 2, 3, 7, 9, 10}) == "1-3, 7, 9-10");
    CHECK(hv::format_vcpu_list(std::vector<std::uint32_t>{0, 2, 4}) == "0, 2, 4");
}

TEST_CASE("json_string: quotes, escapes control characters, keeps UTF-8, escapes other bytes") {
    CHECK(hv::json_string("plain") == "\"plain\"");
    CHECK(hv::json_string("a\"b\\c") == "\"a\\\"b\\\\c\"");
    CHECK(hv::json_string("line\nnext\ttab\x01") == "\"line\\nnext\\ttab\\u0001\"");
    CHECK(hv::json_string("gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x99\x82") == "\"gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x99\x82\"");
    // Latin-1 bytes, a lone continuation byte, a truncated sequence, an overlong encoding, a surrogate.
    CHECK(hv::json_string("caf\xe9") == "\"caf\\u00e9\"");
    CHECK(hv::json_string("\x80") == "\"\\u0080\"");
    CHECK(hv::json_string("\xe2\x82") == "\"\\u00e2\\u0082\"");
    CHECK(hv::json_string("\xc0\xaf") == "\"\\u00c0\\u00af\"");
    CHECK(hv::json_string("\xed\xa0\x80") == "\"\\u00ed\\u00a0\\u0080\"");
}

// What the CLI accepts as input (issue 19): decimal numbers only, sizes
// printed exactly, files of the right kind opened
// without ever waiting on a FIFO, and guest output whose write fails
// reported instead of lost.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/text_match.hpp"
#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/console.hpp"
#include "vmm/run/run_report.hpp"

using hv::test::contains;
using hv::test::message_of;

namespace {

constexpr std::uint64_t KiB = 1024, MiB = KiB * 1024;

// A fresh directory, removed with what is in it.
class TempDir {
public:
    TempDir() {
        std::string templ = (std::filesystem::temp_directory_path() / "hv-cli-inputs-XXXXXX").string();
        REQUIRE(::mkdtemp(templ.data()) != nullptr);
        path_ = templ;
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const char* name) const { return (path_ / name).string(); }
    std::string fifo(const char* name) const {
        const std::string p = file(name);
        REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
        return p;
    }

private:
    std::filesystem::path path_;
};

// The message of the VmmError `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
    return message_of<hv::VmmError>([&] { f(); });
}

std::string contents(const std::string& path) {
    std::ifstream f(path);
    std::stringstream text;
    text << f.rdbuf();
    return text.str();
}

// What the VM does with ConsoleOutput::vm_path(): fopen "wb", write, close.
void vm_writes(const hv::ConsoleOutput& out, const std::string& text) {
    std::FILE* f = std::fopen(out.vm_path().c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
}

} // namespace

TEST_CASE("format_size_exact: the largest unit that divides the value") {
    CHECK(hv::format_size_exact(4095 * KiB) == "4095 KiB"); // format_size: "4.0 MiB", next to the 4 MiB minimum
    CHECK(hv::format_size_exact(4 * MiB) == "4 MiB");
    CHECK(hv::format_size_exact(4 * MiB - 1) == "4194303 bytes");
    CHECK(hv::format_size_exact(64 * 1024 * MiB + 4 * KiB) == "67108868 KiB");
    CHECK(hv::format_size_exact(std::uint64_t{8} << 60) == "8 EiB");
    CHECK(hv::format_size_exact(0) == "0 bytes");
    CHECK(hv::format_size_exact(1) == "1 byte");
}

TEST_CASE("parse_double: decimal notation only") {
    for (const char* ok : {"0", "1", "1.5", ".5", "5.", "2e3", "1E-3", "-1", "+2", "1000000"}) {
        CAPTURE(ok);
        CHECK(hv::parse_double(ok).has_value());
    }
    CHECK(hv::parse_double("2e3") == std::optional<double>(2000));
    for (const char* bad : {"", " 1", "1 ", "inf", "-inf", "infinity", "nan", "NAN", "0x10", "0x1p4", "1e", "e5", ".",
                            "-", "1e400", "1,5", "1.2.3"}) {
        CAPTURE(bad);
        CHECK(!hv::parse_double(bad).has_value());
    }
}

TEST_CASE("parse_u64 and parse_size: no hex, no octal") {
    CHECK(!hv::parse_u64("0x10").has_value());
    CHECK(!hv::parse_u64("-1").has_value());
    CHECK(!hv::parse_u64("+1").has_value());
    CHECK(hv::parse_u64("010") == std::optional<std::uint64_t>(10)); // decimal, not octal 8
    CHECK(!hv::parse_size("0x1000000").has_value());
    CHECK(hv::parse_size("16777216") == std::optional<std::uint64_t>(16 * MiB));
}

TEST_CASE("read_file refuses a FIFO at once, naming what it found") {
    TempDir dir;
    const std::string fifo = dir.fifo("initrd");
    CHECK(error_of([&] { hv::read_file(fifo, "--initrd", MiB); }) ==
          "--initrd '" + fifo + "' is not a regular file: expected a regular file, found a FIFO");
    const std::string sub = dir.file("sub");
    std::filesystem::create_directory(sub);
    CHECK(error_of([&] { hv::read_file(sub, "image", MiB); }) ==
          "image '" + sub + "' is not a regular file: expected a regular file, found a directory");
    CHECK(contains(error_of([&] { hv::read_file("/dev/null", "image", MiB); }), "found a character device"));
}

TEST_CASE("open_output_file: regular files, character devices and FIFOs with a reader") {
    TempDir dir;
    const std::string path = dir.file("out");
    std::ofstream(path) << "old contents";
    CHECK(hv::open_output_file(path, "--serial").valid());
    CHECK(std::filesystem::file_size(path) == 0); // truncated
    CHECK(hv::open_output_file(dir.file("new"), "--serial").valid());
    CHECK(std::filesystem::exists(dir.file("new")));
    CHECK(hv::open_output_file("/dev/null", "--serial").valid());

    const std::string fifo = dir.fifo("fifo");
    CHECK(error_of([&] { hv::open_output_file(fifo, "--serial"); }) ==
          "--serial '" + fifo + "' is a FIFO that no process has open for reading (expected a reader already there: " +
              "vmm does not wait for one); start the reader first");
    const hv::UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK));
    REQUIRE(reader.valid());
    const hv::UniqueFd fd = hv::open_output_file(fifo, "--serial");
    REQUIRE(fd.valid());
    CHECK((::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) == 0); // the writes block, as on any output
}

TEST_CASE("open_output_file refuses a directory before creating or truncating anything") {
    TempDir dir;
    const std::string sub = dir.file("sub");
    std::filesystem::create_directory(sub);
    CHECK(error_of([&] { hv::open_output_file(sub, "--serial"); }) ==
          "--serial '" + sub + "' is not usable as output: expected a regular file, a character device or a FIFO " +
              "with a reader, found a directory");
}

TEST_CASE("require_regular_or_new and hold_fifo_output") {
    TempDir dir;
    const std::string fifo = dir.fifo("fifo");
    CHECK(error_of([&] { hv::require_regular_or_new(fifo, "--json"); }) ==
          "--json '" + fifo + "' is not a regular file: expected a regular file or a path that does not exist yet, " +
              "found a FIFO");
    CHECK(error_of([&] { hv::require_regular_or_new(dir.file("new.json"), "--json"); }).empty());
    CHECK(contains(error_of([&] { hv::require_regular_or_new("/dev/null", "--json"); }), "found a character device"));

    CHECK(contains(error_of([&] { hv::hold_fifo_output(fifo, "--json"); }), "no process has open for reading"));
    CHECK(!hv::hold_fifo_output(dir.file("new.json"), "--json").valid());
    const hv::UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK));
    CHECK(hv::hold_fifo_output(fifo, "--json").valid());
}

TEST_CASE("write_run_report leaves a FIFO in place") {
    TempDir dir;
    const std::string fifo = dir.fifo("run.json");
    CHECK(contains(error_of([&] { hv::write_run_report(fifo, hv::RunReport{}); }), "found a FIFO"));
    struct stat st{};
    REQUIRE(::stat(fifo.c_str(), &st) == 0);
    CHECK(S_ISFIFO(st.st_mode));
    CHECK(!std::filesystem::exists(fifo + ".partial"));
}

TEST_CASE("ConsoleOutput copies what the VM writes to --serial FILE") {
    TempDir dir;
    const std::string path = dir.file("serial.out");
    hv::ConsoleOutput out(path);
    vm_writes(out, "Hello from the guest\n");
    vm_writes(out, "second open\n");
    out.finish();
    CHECK(contents(path) == "Hello from the guest\nsecond open\n");
}

TEST_CASE("ConsoleOutput reports a failed write, naming the destination and the error") {
    hv::ConsoleOutput out(std::string("/dev/full"));
    vm_writes(out, "lost\n");
    CHECK(error_of([&] { out.finish(); }) ==
          "cannot write the guest's serial output to --serial '/dev/full': No space left on device (expected every "
          "byte written; the output from there on is lost)");
}

TEST_CASE("ConsoleOutput: nothing written, nothing to report, and a FIFO without a reader is refused") {
    hv::ConsoleOutput quiet(std::string("/dev/full"));
    CHECK(error_of([&] { quiet.finish(); }).empty());
    TempDir dir;
    const std::string fifo = dir.fifo("serial");
    CHECK(contains(error_of([&] { hv::ConsoleOutput out(fifo); }), "no process has open for reading"));
}

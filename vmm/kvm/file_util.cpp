#include "vmm/kvm/file_util.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>

namespace hv {
namespace {

const std::string kRegular = "a regular file";
const std::string kOutputKinds = "a regular file, a character device or a FIFO with a reader";

// "WHAT 'PATH' is not SUMMARY: expected EXPECTED, found a FIFO"
[[noreturn]] void refuse_kind(const std::string& what, const std::string& path, const std::string& summary,
                              const std::string& expected, mode_t found) {
    throw VmmError(what + " '" + path + "' is not " + summary + ": expected " + expected + ", found " +
                   file_type_name(found));
}

[[noreturn]] void refuse_fifo_without_reader(const std::string& what, const std::string& path) {
    throw VmmError(what + " '" + path + "' is a FIFO that no process has open for reading (expected a reader " +
                   "already there: vmm does not wait for one); start the reader first");
}

bool is_output_kind(mode_t mode) { return S_ISREG(mode) || S_ISCHR(mode) || S_ISFIFO(mode); }

// Opens for reading without waiting for a FIFO's writer; fstat does the rest.
UniqueFd open_for_reading(const std::string& path, const char* what) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (fd.valid()) return fd;
    const int err = errno;
    struct stat st{};
    // A socket cannot be opened (ENXIO): name what it is instead.
    if (err == ENXIO && ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        refuse_kind(what, path, kRegular, kRegular, st.st_mode);
    throw VmmError(std::string("cannot open ") + what + " '" + path + "': " + std::strerror(err));
}

void clear_nonblock(int fd, const std::string& what, const std::string& path) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        throw VmmError("cannot set " + what + " '" + path + "' to blocking writes: " + std::strerror(errno));
}

} // namespace

std::string file_type_name(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "a file of unknown type";
}

std::filesystem::path this_binary(const std::string& who) {
    std::error_code ec;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) throw VmmError(who + ": cannot find this binary through /proc/self/exe: " + ec.message());
    return self;
}

std::string build_tree_guest(const std::string& who, const char* name) {
    return (this_binary(who).parent_path().parent_path() / "guest" / name).string();
}

std::vector<std::uint8_t> read_file(const std::string& path, const char* what, std::uint64_t max_bytes) {
    const UniqueFd fd = open_for_reading(path, what);
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) throw VmmError(std::string("cannot stat ") + what + " '" + path + "': " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) refuse_kind(what, path, kRegular, kRegular, st.st_mode);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size > max_bytes)
        throw VmmError(std::string(what) + " '" + path + "' is " + format_size(size) + ", larger than guest RAM (" +
                       format_size(max_bytes) + ")");
    std::vector<std::uint8_t> data(size);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::read(fd.get(), data.data() + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw VmmError(std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    data.resize(done);
    return data;
}

UniqueFd open_output_file(const std::string& path, const std::string& what) {
    // Refused before open, which would create, truncate or wait.
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0 && !is_output_kind(st.st_mode)) refuse_kind(what, path, "usable as output", kOutputKinds, st.st_mode);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK | O_CLOEXEC, 0666));
    if (!fd.valid()) {
        const int err = errno;
        if (err == ENXIO && ::stat(path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)) refuse_fifo_without_reader(what, path);
        throw VmmError("cannot open " + what + " file '" + path + "': " + std::strerror(err));
    }
    // The path may have changed between stat and open: check what was opened.
    if (::fstat(fd.get(), &st) != 0) throw VmmError("cannot stat " + what + " '" + path + "': " + std::strerror(errno));
    if (!is_output_kind(st.st_mode)) refuse_kind(what, path, "usable as output", kOutputKinds, st.st_mode);
    clear_nonblock(fd.get(), what, path);
    return fd;
}

void require_regular_or_new(const std::string& path, const std::string& what) {
    struct stat st{};
    // A path that cannot be looked up is left to the writer, which names the error.
    if (::stat(path.c_str(), &st) != 0) return;
    if (!S_ISREG(st.st_mode)) refuse_kind(what, path, kRegular, "a regular file or a path that does not exist yet", st.st_mode);
}

UniqueFd hold_fifo_output(const std::string& path, const std::string& what) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) return UniqueFd();
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid() && errno == ENXIO) refuse_fifo_without_reader(what, path);
    if (!fd.valid()) throw VmmError("cannot open " + what + " '" + path + "': " + std::strerror(errno));
    return fd;
}

} // namespace hv

#include "file_util.hpp"

#include "format.hpp"
#include "unique_fd.hpp"
#include "vmm_error.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>

namespace hv {

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
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) throw VmmError(std::string("cannot open ") + what + " '" + path + "': " + std::strerror(errno));
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) throw VmmError(std::string("cannot stat ") + what + " '" + path + "': " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw VmmError(std::string(what) + " '" + path + "' is not a regular file");
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

} // namespace hv

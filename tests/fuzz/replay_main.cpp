// The main() of a fuzz target built without libFuzzer: runs
// LLVMFuzzerTestOneInput once on every file named on the command line, or
// found in a directory named there (not recursively), in name order. This is
// how the committed corpora run as unit tests under g++, and how a saved
// crash is replayed in a normal build. Exits 0 after the last input
// ("replayed N inputs (M bytes)"); a failing input aborts inside the target,
// after this prints which file it was.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE|DIR...\n  runs the fuzz target once on each input\n", argv[0]);
        return 2;
    }
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        const fs::path p(argv[i]);
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            std::vector<fs::path> found;
            for (const auto& e : fs::directory_iterator(p, ec))
                if (e.is_regular_file()) found.push_back(e.path());
            if (ec) {
                std::fprintf(stderr, "%s: cannot list %s: %s\n", argv[0], argv[i], ec.message().c_str());
                return 2;
            }
            std::sort(found.begin(), found.end());
            inputs.insert(inputs.end(), found.begin(), found.end());
        } else if (fs::is_regular_file(p, ec)) {
            inputs.push_back(p);
        } else {
            std::fprintf(stderr, "%s: expected an input file or a directory, found nothing usable at %s\n", argv[0],
                         argv[i]);
            return 2;
        }
    }
    std::uint64_t bytes = 0;
    for (const fs::path& p : inputs) {
        std::ifstream f(p, std::ios::binary);
        const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        if (!f.good() && !f.eof()) {
            std::fprintf(stderr, "%s: cannot read %s\n", argv[0], p.c_str());
            return 2;
        }
        std::fprintf(stderr, "input %s (%zu bytes)\n", p.c_str(), data.size());
        LLVMFuzzerTestOneInput(data.data(), data.size());
        bytes += data.size();
    }
    std::printf("replayed %zu inputs (%llu bytes)\n", inputs.size(), static_cast<unsigned long long>(bytes));
    return 0;
}

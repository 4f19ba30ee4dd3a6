// rmap_bench: the reverse map's descriptor size N, measured. For each N and
// each distribution of links per frame it times add (links in random order),
// list (every frame once, random order) and remove (another random order) on
// one thread, and reports bytes per link: (descriptors * sizeof(Desc) +
// frames * (head + lock)) / links, plus malloc's own view (mallinfo2), which
// includes allocator overhead. Medians over --repeats; N is the inner loop (its
// order rotating) so that every N of one repeat runs under the same load.
//
//   rmap_bench [--links 2000000] [--repeats 5] [--seed 1] [--json FILE]
#include "mmu/secondary/rmap.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <malloc.h>
#include <random>
#include <string>
#include <utility>
#include <vector>

using hv::mmu::BasicRmap;
using hv::mmu::Pfn;

namespace {

constexpr unsigned kSizes[] = {6, 14, 30, 62};
constexpr std::size_t kNumSizes = std::size(kSizes);

struct Workload {
    std::string name;
    Pfn frames = 0;
    std::vector<std::pair<Pfn, std::uint64_t>> adds, removes; // (frame, gfn), each in its own random order
    std::vector<Pfn> lists;
};

// counts(rng) gives the number of links of the next frame.
Workload make_workload(const std::string& name, std::uint64_t target_links, std::uint64_t seed,
                       const std::function<unsigned(std::mt19937_64&)>& counts) {
    std::mt19937_64 rng(seed);
    Workload w;
    w.name = name;
    std::uint64_t gfn = 1;
    while (w.adds.size() < target_links) {
        const unsigned n = counts(rng);
        for (unsigned i = 0; i < n; ++i) w.adds.push_back({w.frames, gfn++});
        ++w.frames;
    }
    w.removes = w.adds;
    std::shuffle(w.adds.begin(), w.adds.end(), rng);
    std::shuffle(w.removes.begin(), w.removes.end(), rng);
    w.lists.resize(w.frames);
    for (Pfn p = 0; p < w.frames; ++p) w.lists[p] = p;
    std::shuffle(w.lists.begin(), w.lists.end(), rng);
    return w;
}

struct Sample {
    double add_ns = 0, remove_ns = 0, list_ns = 0; // per call
    double bytes_per_link = 0, heap_bytes_per_link = 0;
    std::size_t descriptors = 0, desc_bytes = 0;
};

std::size_t heap_in_use() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    const struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
#else
    return 0;
#endif
}

double ns_since(std::chrono::steady_clock::time_point t0, std::size_t ops) {
    const auto dt = std::chrono::steady_clock::now() - t0;
    return std::chrono::duration<double, std::nano>(dt).count() / static_cast<double>(ops);
}

std::uint64_t g_sink = 0; // keeps list() results alive

template <unsigned N>
Sample run_once(const Workload& w) {
    Sample s;
    const std::size_t heap0 = heap_in_use();
    BasicRmap<N> rmap(w.frames);
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& [pfn, gfn] : w.adds) rmap.add(pfn, gfn);
    s.add_ns = ns_since(t0, w.adds.size());
    const std::size_t heap1 = heap_in_use();

    s.descriptors = rmap.descriptors();
    s.desc_bytes = rmap.descriptor_bytes();
    const double links = static_cast<double>(w.adds.size());
    s.bytes_per_link =
        static_cast<double>(s.descriptors * rmap.descriptor_bytes() + w.frames * rmap.frame_bytes()) / links;
    s.heap_bytes_per_link = static_cast<double>(heap1 - heap0) / links;

    t0 = std::chrono::steady_clock::now();
    for (Pfn p : w.lists) g_sink += rmap.list(p).size();
    s.list_ns = ns_since(t0, w.lists.size());

    t0 = std::chrono::steady_clock::now();
    std::size_t missing = 0;
    for (const auto& [pfn, gfn] : w.removes) missing += !rmap.remove(pfn, gfn);
    s.remove_ns = ns_since(t0, w.removes.size());
    if (const std::uint64_t left = rmap.links(); missing != 0 || left != 0) {
        std::fprintf(stderr, "rmap_bench: N=%u %s: %zu links not found on remove, %llu left\n", N, w.name.c_str(),
                     missing, static_cast<unsigned long long>(left));
        std::exit(1);
    }
    return s;
}

template <std::size_t... I>
constexpr auto make_runners(std::index_sequence<I...>) {
    return std::array<Sample (*)(const Workload&), sizeof...(I)>{&run_once<kSizes[I]>...};
}
constexpr auto kRunners = make_runners(std::make_index_sequence<kNumSizes>());

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Row {
    unsigned n;
    std::string dist;
    Pfn frames;
    std::size_t links, descriptors, desc_bytes;
    double add, add_min, add_max, remove, remove_min, remove_max, list, list_min, list_max;
    double bytes_per_link, heap_bytes_per_link;
};

Row summarize(unsigned n, const Workload& w, const std::vector<Sample>& samples) {
    std::vector<double> add, rem, lst, heap;
    for (const Sample& s : samples) {
        add.push_back(s.add_ns);
        rem.push_back(s.remove_ns);
        lst.push_back(s.list_ns);
        heap.push_back(s.heap_bytes_per_link);
    }
    auto lo = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
    auto hi = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
    return Row{n,           w.name,   w.frames, w.adds.size(), samples[0].descriptors, samples[0].desc_bytes,
               median(add), lo(add),  hi(add),  median(rem),   lo(rem),                hi(rem),
               median(lst), lo(lst),  hi(lst),  samples[0].bytes_per_link,             median(heap)};
}

void write_json(const char* path, const std::vector<Row>& rows, std::uint64_t links, int repeats) {
    FILE* f = std::fopen(path, "w");
    if (!f) {
        std::perror(path);
        std::exit(1);
    }
    std::fprintf(f, "{\n  \"bench\": \"rmap\",\n  \"target_links\": %llu,\n  \"repeats\": %d,\n  \"results\": [\n",
                 static_cast<unsigned long long>(links), repeats);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        std::fprintf(f,
                     "    {\"n\": %u, \"dist\": \"%s\", \"frames\": %llu, \"links\": %zu, \"descriptors\": %zu, "
                     "\"desc_bytes\": %zu, \"add_ns\": %.2f, \"add_ns_min\": %.2f, \"add_ns_max\": %.2f, "
                     "\"remove_ns\": %.2f, \"remove_ns_min\": %.2f, \"remove_ns_max\": %.2f, "
                     "\"list_ns\": %.2f, \"list_ns_min\": %.2f, \"list_ns_max\": %.2f, "
                     "\"bytes_per_link\": %.3f, \"heap_bytes_per_link\": %.3f}%s\n",
                     r.n, r.dist.c_str(), static_cast<unsigned long long>(r.frames), r.links, r.descriptors,
                     r.desc_bytes, r.add, r.add_min, r.add_max, r.remove, r.remove_min, r.remove_max, r.list,
                     r.list_min, r.list_max, r.bytes_per_link, r.heap_bytes_per_link,
                     i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
}

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: rmap_bench [--links N] [--repeats R] [--seed S] [--json FILE]\n");
    std::exit(2);
}

} // namespace

int main(int argc, char** argv) {
    std::uint64_t links = 2'000'000, seed = 1;
    int repeats = 5;
    const char* json = nullptr;
    for (int i = 1; i < argc; ++i) {
        const bool has_value = i + 1 < argc;
        if (!std::strcmp(argv[i], "--links") && has_value) links = std::strtoull(argv[++i], nullptr, 0);
        else if (!std::strcmp(argv[i], "--repeats") && has_value) repeats = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--seed") && has_value) seed = std::strtoull(argv[++i], nullptr, 0);
        else if (!std::strcmp(argv[i], "--json") && has_value) json = argv[++i];
        else usage();
    }
    if (links == 0 || repeats < 1) usage();

    using Rng = std::mt19937_64;
    auto fixed = [](unsigned k) { return std::function<unsigned(Rng&)>([k](Rng&) { return k; }); };
    const std::vector<std::pair<std::string, std::function<unsigned(Rng&)>>> dists = {
        {"1", fixed(1)}, {"2", fixed(2)}, {"8", fixed(8)}, {"64", fixed(64)}, {"512", fixed(512)},
        {"mix", [](Rng& rng) -> unsigned { // 90% once, 9% 2-8, 1% 64-512
             const std::uint64_t u = rng() % 100;
             if (u < 90) return 1;
             if (u < 99) return 2 + static_cast<unsigned>(rng() % 7);
             return 64 + static_cast<unsigned>(rng() % 449);
         }}};

    std::vector<Row> rows;
    std::printf("rmap_bench: %llu links per run, median of %d (single thread; ns per call)\n",
                static_cast<unsigned long long>(links), repeats);
    std::printf("%-4s %-5s %9s %9s %6s %8s %8s %9s %10s %10s\n", "N", "dist", "frames", "descs", "desc_B", "add_ns",
                "rm_ns", "list_ns", "B/link", "heapB/link");
    for (const auto& [name, counts] : dists) {
        const Workload w = make_workload(name, links, seed, counts);
        std::vector<Sample> samples[kNumSizes];
        for (int r = 0; r < repeats; ++r) {
            // Rotate which N goes first, so no N always runs on a cold machine.
            for (std::size_t k = 0; k < kNumSizes; ++k) {
                const std::size_t i = (k + static_cast<std::size_t>(r)) % kNumSizes;
                samples[i].push_back(kRunners[i](w));
            }
        }
        for (std::size_t i = 0; i < kNumSizes; ++i) {
            const Row row = summarize(kSizes[i], w, samples[i]);
            std::printf("%-4u %-5s %9llu %9zu %6zu %8.1f %8.1f %9.1f %10.2f %10.2f\n", row.n, row.dist.c_str(),
                        static_cast<unsigned long long>(row.frames), row.descriptors, row.desc_bytes, row.add,
                        row.remove, row.list, row.bytes_per_link, row.heap_bytes_per_link);
            rows.push_back(row);
        }
        std::fflush(stdout);
    }
    if (json) write_json(json, rows, links, repeats);
    return g_sink == 0 ? 1 : 0; // every run lists every link, so the sink is never 0
}

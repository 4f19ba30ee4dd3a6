// Fuzz target `ops`: the input is a sequence of operations on the host
// address space and the shadow MMU (memslot changes, faults from four vCPUs,
// guest writes, every host operation) under a lock policy, a coherence
// policy, a zap batch and an invalidation shape the input picks too. After
// every step the real system is compared with ReferenceModel (outcome,
// memslots, host pages, shadow entries and the tokens read through them)
// and ShadowMmu::audit() runs (inside check()). A mismatch prints the step,
// the op and every difference, then aborts, so libFuzzer keeps the input.
//
// Input layout: 4 bytes of configuration (lock, coherence, batch, shape),
// then OpGenerator's choices (ByteChoices), until the bytes run out.
#include "mmu/check/op_generator.hpp"
#include "mmu/check/reference_model.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <span>
#include <string>
#include <vector>

using namespace hv::mmu;

namespace {

constexpr std::size_t kMaxSteps = 2000;
constexpr LockPolicy kLocks[] = {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split};
constexpr CoherencePolicy kCoherences[] = {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive};
constexpr std::size_t kBatches[] = {1, 2, 3, 64, 512, 0}; // 0: unlimited

[[noreturn]] void fail(const ShadowConfig& c, bool page_at_a_time, const std::string& what) {
    std::fprintf(stderr, "fuzz ops: %s/%s/batch %zu/%s: the real system and the model disagree\n%s\n",
                 to_string(c.lock), to_string(c.coherence), c.batch, page_at_a_time ? "page-at-a-time" : "range",
                 what.c_str());
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    ByteChoices in({data, size});
    ShadowConfig c;
    c.lock = kLocks[in.below(std::size(kLocks))];
    c.coherence = kCoherences[in.below(std::size(kCoherences))];
    c.batch = kBatches[in.below(std::size(kBatches))];
    c.vcpus = op_window::kVcpus;
    const bool page_at_a_time = in.below(2) == 1;

    DifferentialRig rig(c, page_at_a_time);
    ReferenceModel model(c, page_at_a_time);
    std::size_t step = 0;
    const auto run = [&](const Op& op) {
        const StepOutcome outcome = apply_both(rig, model, op);
        const std::vector<std::string> lines = check(rig, model, &outcome);
        if (!lines.empty()) fail(c, page_at_a_time, differential_report(step, op, outcome, lines));
        ++step;
    };
    for (const Op& op : differential_setup_ops()) run(op);
    OpGenerator<ByteChoices> gen(in);
    while (!in.exhausted() && step < kMaxSteps) run(gen.next(model));
    return 0;
}

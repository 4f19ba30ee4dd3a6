#include "vmm/cli/mmu_options.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <sstream>

namespace hv {

using namespace hv::mmu;

namespace {

[[noreturn]] void fail(const std::string& message) { throw VmmError(message); }

void parse_churn(const std::string& churn, double (&churn_rate)[kChurnOps]) {
    bool seen[kChurnOps] = {};
    std::stringstream ss(churn);
    std::string item;
    while (std::getline(ss, item, ',')) {
        const auto eq = item.find('=');
        if (eq == std::string::npos) fail("--churn: expected OP=RATE[,OP=RATE...], got '" + item + "'");
        const std::string op = item.substr(0, eq), rate = item.substr(eq + 1);
        std::size_t k = 0;
        while (k < kChurnOps && op != to_string(static_cast<ChurnOp>(k))) ++k;
        if (k == kChurnOps)
            fail("--churn: unknown operation '" + op + "' (expected migrate, unmap, protect, merge, swap or age)");
        if (seen[k]) fail("--churn: '" + op + "' given twice");
        seen[k] = true;
        const auto v = parse_double(rate);
        if (!v || *v < 0 || *v > 1e7)
            fail("--churn: " + op + " rate must be operations per second in 0..10000000, got '" + rate + "'");
        churn_rate[k] = *v;
    }
    if (churn.back() == ',') fail("--churn: expected OP=RATE after the last ','");
}

} // namespace

void parse_mmu_policies(const MmuPolicyArgs& a, ShadowConfig& shadow_out, double (&churn_out)[kChurnOps]) {
    // Parsed into copies, stored only when everything parsed.
    ShadowConfig shadow = shadow_out;
    double churn_rate[kChurnOps];
    std::copy(std::begin(churn_out), std::end(churn_out), std::begin(churn_rate));
    if (!a.lock.empty()) {
        const auto lock = lock_policy_named(a.lock);
        if (!lock) fail("--lock: expected global, rw or split, got '" + a.lock + "'");
        shadow.lock = *lock;
    }
    if (!a.coherence.empty()) {
        const auto coherence = coherence_policy_named(a.coherence);
        if (!coherence) fail("--coherence: expected seq, ptlock or range-active, got '" + a.coherence + "'");
        shadow.coherence = *coherence;
    }
    if (!a.batch.empty()) {
        const auto b = parse_u64(a.batch);
        if (!b || *b > (std::uint64_t{1} << 30))
            fail("--batch: expected entries per lock hold (1, 64, 512, ...) or 0 for unlimited, got '" + a.batch + "'");
        shadow.batch = static_cast<std::size_t>(*b);
    }
    if (!a.churn.empty()) parse_churn(a.churn, churn_rate);
    shadow_out = shadow;
    std::copy(std::begin(churn_rate), std::end(churn_rate), std::begin(churn_out));
}

} // namespace hv

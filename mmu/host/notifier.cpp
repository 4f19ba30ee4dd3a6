#include "mmu/host/notifier.hpp"

namespace hv::mmu {

const char* to_string(InvalidateEvent e) {
    switch (e) {
    case InvalidateEvent::Unmap: return "unmap";
    case InvalidateEvent::Protect: return "protect";
    case InvalidateEvent::Migrate: return "migrate";
    case InvalidateEvent::Merge: return "merge";
    case InvalidateEvent::SwapOut: return "swap-out";
    case InvalidateEvent::Clear: return "clear";
    }
    return "?";
}

} // namespace hv::mmu

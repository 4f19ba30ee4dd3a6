#include "vmm/kvm/guest_memory.hpp"

#include <sys/mman.h>

namespace hv {

GuestMemory::GuestMemory(std::uint64_t size) : mapping_(Mapping::anonymous(size, "guest RAM")) {}

bool GuestMemory::avoid_huge_pages() { return ::madvise(mapping_.data(), mapping_.size(), MADV_NOHUGEPAGE) == 0; }

} // namespace hv

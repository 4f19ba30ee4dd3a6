#include "guest_memory.hpp"

namespace hv {

GuestMemory::GuestMemory(std::uint64_t size) : mapping_(Mapping::anonymous(size, "guest RAM")) {}

} // namespace hv

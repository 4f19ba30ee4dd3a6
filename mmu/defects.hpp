#pragma once
// Deliberate defects, for proving that the fuzzers find what they are meant
// to find (docs/fuzzing.md). Each is compiled in only when the build
// defines HV_DEFECT_<NAME>: CMake's -DHV_DEFECT=<name>, which only
// `scripts/fuzz.sh --defect` passes, to a build tree of its own. With none
// defined every flag is false and the code they guard compiles away.
namespace hv::mmu::defect {

#ifdef HV_DEFECT_SKIP_SEQ_RECHECK
inline constexpr bool kSkipSeqRecheck = true; // install ignores a moved invalidation sequence (seq policy)
#else
inline constexpr bool kSkipSeqRecheck = false;
#endif

#ifdef HV_DEFECT_SKIP_SHOOTDOWN
inline constexpr bool kSkipShootdown = true; // zaps clear entries but never ask vCPUs to flush
#else
inline constexpr bool kSkipShootdown = false;
#endif

#ifdef HV_DEFECT_DROP_LAST_OF_BATCH
inline constexpr bool kDropLastOfBatch = true; // the last entry a full zap batch visits stays mapped
#else
inline constexpr bool kDropLastOfBatch = false;
#endif

#ifdef HV_DEFECT_FORGET_RMAP_REMOVAL
inline constexpr bool kForgetRmapRemoval = true; // a zap of a guest page at index 7 mod 8 keeps its rmap link
#else
inline constexpr bool kForgetRmapRemoval = false;
#endif

#ifdef HV_DEFECT_RANGE_ACTIVE_BATCH_BOUNDARY
inline constexpr bool kRangeActiveBatchBoundary = true; // range-active ignores an active range ending on a batch boundary
#else
inline constexpr bool kRangeActiveBatchBoundary = false;
#endif

} // namespace hv::mmu::defect

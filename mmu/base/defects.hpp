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

// Reordering defects: two steps of a protocol swapped. The scheduling point
// between them (sched_point.hpp) is what lets the `schedule` target run
// another thread in between, in either order.

#ifdef HV_DEFECT_FAULT_SNAPSHOT_LATE
inline constexpr bool kFaultSnapshotLate = true; // fault() reads the invalidation sequence after the host lookup
#else
inline constexpr bool kFaultSnapshotLate = false;
#endif

#ifdef HV_DEFECT_WALK_READS_BEFORE_JOINING
inline constexpr bool kWalkReadsBeforeJoining = true; // walk() reads the entry, then joins the table's mask
#else
inline constexpr bool kWalkReadsBeforeJoining = false;
#endif

#ifdef HV_DEFECT_ZAP_BEFORE_BEGIN
inline constexpr bool kZapBeforeBegin = true; // invalidate start zaps, then marks the range in progress
#else
inline constexpr bool kZapBeforeBegin = false;
#endif

#ifdef HV_DEFECT_END_DROPS_COUNT_FIRST
inline constexpr bool kEndDropsCountFirst = true; // invalidate end drops the in-progress count, then moves the sequence
#else
inline constexpr bool kEndDropsCountFirst = false;
#endif

#ifdef HV_DEFECT_ZAP_READS_MASKS_FIRST
inline constexpr bool kZapReadsMasksFirst = true; // a zap batch reads the shootdown masks before it clears entries
#else
inline constexpr bool kZapReadsMasksFirst = false;
#endif

#ifdef HV_DEFECT_ZAP_FLUSHES_BEFORE_CLEARING
inline constexpr bool kZapFlushesBeforeClearing = true; // a zap batch shoots down its pages, then clears them
#else
inline constexpr bool kZapFlushesBeforeClearing = false;
#endif

#ifdef HV_DEFECT_SHOOTDOWN_LOOKS_BEFORE_POSTING
inline constexpr bool kShootdownLooksBeforePosting = true; // a shootdown reads the target's announcement, then posts
#else
inline constexpr bool kShootdownLooksBeforePosting = false;
#endif

} // namespace hv::mmu::defect

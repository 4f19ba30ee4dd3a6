# The PC test kernels (guest/pc/, see guest/README.md): multiboot v1 images
# for QEMU's -kernel and for vmm run. Included from guest/CMakeLists.txt, so
# the sanitizer stripping and HV_GUEST_C_FLAGS there apply here too.
#
# Each is compiled as x86-64 freestanding code, linked as an ELF64 at 2 MiB
# (pc/lib/pc.ld) to guest/pc/NAME.elf64, then converted with objcopy to the
# ELF32 guest/pc/NAME.elf that QEMU's multiboot loader accepts ("give a
# 32bit one" otherwise); a check then makes sure the multiboot header is
# still in the first 8 KiB.

set(HV_PC_SRC ${CMAKE_CURRENT_SOURCE_DIR}/pc)
set(HV_PC_OUT ${CMAKE_BINARY_DIR}/guest/pc)
set(HV_PC_LDS ${HV_PC_SRC}/lib/pc.ld)

if(NOT CMAKE_OBJCOPY)
  message(FATAL_ERROR "guest/pc: objcopy not found (CMAKE_OBJCOPY); it converts the images to ELF32")
endif()

# The framework, plus fmt.c and string.c from the 64-bit runtime (both
# depend on nothing else there).
add_library(hv_pc_lib OBJECT
  pc/lib/entry.S
  pc/lib/isr.S
  pc/lib/trampoline.S
  pc/lib/start.c
  pc/lib/boot.c
  pc/lib/heap.c
  pc/lib/console.c
  pc/lib/report.c
  pc/lib/idt.c
  pc/lib/pic.c
  pc/lib/apic.c
  pc/lib/ioapic.c
  pc/lib/time.c
  pc/lib/pm_timer.c
  pc/lib/acpi.c
  pc/lib/madt.c
  pc/lib/fwcfg.c
  pc/lib/smp.c
  pc/lib/util.c
  runtime/fmt.c
  runtime/string.c)
target_link_libraries(hv_pc_lib PUBLIC hv_guest_options)
target_include_directories(hv_pc_lib PUBLIC ${HV_PC_SRC}/lib)
set_target_properties(hv_pc_lib PROPERTIES
  C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF
  POSITION_INDEPENDENT_CODE OFF INTERPROCEDURAL_OPTIMIZATION OFF)

set(HV_PC_TESTS apic smpboot ioapic pmtimer fwcfg acpi mptable)
set(HV_PC_SOURCES_apic pc/tests/apic.c pc/tests/apic_timer.c pc/tests/apic_ipi.c)
foreach(_name IN LISTS HV_PC_TESTS)
  if(NOT DEFINED HV_PC_SOURCES_${_name})
    set(HV_PC_SOURCES_${_name} pc/tests/${_name}.c)
  endif()
  set(_target guest_pc_${_name})
  add_executable(${_target} ${HV_PC_SOURCES_${_name}})
  target_link_libraries(${_target} PRIVATE hv_pc_lib hv_guest_options)
  hv_guest_image(${_target} ${_name} ${HV_PC_LDS})
  set_target_properties(${_target} PROPERTIES SUFFIX .elf64 RUNTIME_OUTPUT_DIRECTORY ${HV_PC_OUT})
  add_custom_command(TARGET ${_target} POST_BUILD
    COMMAND ${CMAKE_OBJCOPY} -O elf32-i386 $<TARGET_FILE:${_target}> ${HV_PC_OUT}/${_name}.elf
    COMMAND ${CMAKE_COMMAND} -DIMAGE=${HV_PC_OUT}/${_name}.elf -P ${HV_PC_SRC}/check-multiboot.cmake
    BYPRODUCTS ${HV_PC_OUT}/${_name}.elf
    VERBATIM)
  list(APPEND HV_GUEST_TARGETS ${_target})
endforeach()

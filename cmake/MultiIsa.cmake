# moon_add_isa_sources(<target> <src>...)
#
# Each listed kernel source is compiled three times into <target>: once for AVX-512, once for AVX2+FMA and
# once for baseline x86-64. Every copy sees MOON_ISA_NS defined to avx512, avx2 or generic, so the file puts
# its functions in namespace moon::cpu::MOON_ISA_NS and one binary carries all three. ops/cpu/isa.h picks
# the copy to call at run time from the CPU's features (or from MOON_ISA=avx512|avx2|generic).
function(moon_add_isa_sources target)
  foreach(src IN LISTS ARGN)
    get_filename_component(stem "${src}" NAME_WE)
    get_filename_component(abs "${src}" ABSOLUTE)
    foreach(isa avx512 avx2 generic)
      set(out "${CMAKE_CURRENT_BINARY_DIR}/isa/${stem}_${isa}.cpp")
      file(WRITE "${out}.tmp" "// generated: ${stem} compiled for ${isa}\n#define MOON_ISA_NS ${isa}\n#include \"${abs}\"\n")
      file(COPY_FILE "${out}.tmp" "${out}" ONLY_IF_DIFFERENT)
      if(isa STREQUAL "avx512")
        set(flags -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mavx2 -mf16c -mbmi2)
      elseif(isa STREQUAL "avx2")
        set(flags -mavx2 -mfma -mf16c -mbmi2)
      else()
        set(flags "")
      endif()
      set_source_files_properties("${out}" PROPERTIES COMPILE_OPTIONS "${flags}" OBJECT_DEPENDS "${abs}")
      target_sources(${target} PRIVATE "${out}")
    endforeach()
  endforeach()
endfunction()

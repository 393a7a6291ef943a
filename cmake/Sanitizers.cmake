# tandem_set_sanitizers(<interface target>): ASan + UBSan when TANDEM_SANITIZE=ON.
# Recovery is off so the first UB report fails the test.
function(tandem_set_sanitizers target)
  if(TANDEM_SANITIZE)
    set(flags -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_compile_options(${target} INTERFACE ${flags})
    target_link_options(${target} INTERFACE ${flags})
  endif()
endfunction()

# tandem_set_fuzzing(<interface target>): when TANDEM_FUZZ=ON, instruments
# everything for libFuzzer coverage (fuzzer-no-link: no libFuzzer main()) and
# ASan + UBSan, so a bug found by a fuzzer in a library aborts the run. The
# fuzzer executables add -fsanitize=fuzzer themselves (tests/fuzz).
function(tandem_set_fuzzing target)
  if(TANDEM_FUZZ)
    if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      message(FATAL_ERROR "TANDEM_FUZZ needs clang (CC=clang CXX=clang++)")
    endif()
    target_compile_options(${target} INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                                               -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${target} INTERFACE -fsanitize=address,undefined)
  endif()
endfunction()

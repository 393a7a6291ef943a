# tandem_set_sanitizers(<interface target>): ASan + UBSan when TANDEM_SANITIZE=ON.
# Recovery is off so the first UB report fails the test.
function(tandem_set_sanitizers target)
  if(TANDEM_SANITIZE)
    set(flags -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_compile_options(${target} INTERFACE ${flags})
    target_link_options(${target} INTERFACE ${flags})
  endif()
endfunction()

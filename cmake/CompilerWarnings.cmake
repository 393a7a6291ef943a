# tandem_set_warnings(<interface target>): the warning set every target builds with.
function(tandem_set_warnings target)
  target_compile_options(${target} INTERFACE -Wall -Wextra -Wshadow
                                             -Wno-missing-field-initializers)
  if(TANDEM_WERROR)
    target_compile_options(${target} INTERFACE -Werror)
  endif()
endfunction()

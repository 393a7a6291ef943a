# tandem_set_warnings(<interface target>): the warning set every target builds with.
function(tandem_set_warnings target)
  target_compile_options(${target} INTERFACE -Wall -Wextra -Wshadow
                                             -Wno-missing-field-initializers)
  # Clang checks the thread-safety annotations (common/thread_annotations.h);
  # a violation is an error whatever TANDEM_WERROR says.
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(${target} INTERFACE -Wthread-safety -Werror=thread-safety)
  endif()
  if(TANDEM_WERROR)
    target_compile_options(${target} INTERFACE -Werror)
  endif()
endfunction()

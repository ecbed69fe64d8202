# ctest driver: compiling SOURCE must fail, and the compiler's message must match the regex on the
# file's first line (`// EXPECT: <regex>`), so misuse of a policy reads as a sentence, not a
# template dump. COMPILER and INCLUDES ('|'-joined) come from the build.
file(STRINGS ${SOURCE} first LIMIT_COUNT 1)
string(REGEX REPLACE "^// EXPECT: " "" expect "${first}")
string(REPLACE "|" ";" INCLUDES "${INCLUDES}")
set(flags -std=c++20 -fsyntax-only)
foreach(dir IN LISTS INCLUDES)
  list(APPEND flags -I${dir})
endforeach()
execute_process(COMMAND ${COMPILER} ${flags} ${SOURCE} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it misuses a policy and must not")
endif()
if(NOT "${out}${err}" MATCHES "${expect}")
  message(FATAL_ERROR "the compiler's message does not match '${expect}':\n${out}${err}")
endif()

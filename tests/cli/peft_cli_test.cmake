# peft_cli_test(NAME [PROGRAM target] ...): peft_program_test (program_test.cmake) with
# identity_finetune as the default program, and the fixture paths the CLI tests share.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(PEFT_TINY ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)
set(PEFT_BAD ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/bad)
function(peft_cli_test name)
  cmake_parse_arguments(T "" "PROGRAM" "" ${ARGN})
  if(NOT T_PROGRAM)
    set(T_PROGRAM identity_finetune)
  endif()
  peft_program_test(${T_PROGRAM} ${name} ${T_UNPARSED_ARGUMENTS})
endfunction()

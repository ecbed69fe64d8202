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
# peft_expect_file(NAME PRODUCER FILE REGEX): cli_NAME checks FILE (relative to cli_PRODUCER's work
# folder) against expect_file.cmake's '|'-separated REGEX, after cli_PRODUCER has run. The fixture
# is appended, so a producer other tests already depend on keeps its own.
function(peft_expect_file name producer file regex)
  add_test(NAME cli_${name} COMMAND ${CMAKE_COMMAND} -DFILE=${PEFT_CLI_WORK}/${producer}/${file}
    "-DEXPECT_REGEX=${regex}" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/expect_file.cmake)
  set_property(TEST cli_${producer} APPEND PROPERTY FIXTURES_SETUP ${producer}_wrote)
  set_tests_properties(cli_${name} PROPERTIES FIXTURES_REQUIRED ${producer}_wrote)
endfunction()

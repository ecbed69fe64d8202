# run_checked(out_var command args...), for the CLI test scripts (cmake -P): runs the command, fails
# the test with its output unless it exits 0, and returns stdout + stderr. To run it in a folder:
# run_checked(out ${CMAKE_COMMAND} -E chdir DIR program args...).
function(run_checked out_var)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}${err}")
  endif()
  set(${out_var} "${out}${err}" PARENT_SCOPE)
endfunction()

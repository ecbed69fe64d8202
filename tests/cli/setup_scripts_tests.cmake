# The README's set-up commands in order (tools/quickstart.sh's folder, then tools/test.sh).
add_test(NAME cli_test_sh_forces_tests_on
         COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/setup_scripts_work
                 -DGENERATOR=${CMAKE_GENERATOR} -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_setup_scripts_test.cmake)

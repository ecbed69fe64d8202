# policy_experiments smoke test: every compile-time configuration builds a model, trains a step
# and reports a row of the table, on both tiny shapes; bad flags fail with a message.
add_test(NAME cli_policy_experiments COMMAND ${CMAKE_COMMAND}
  -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/cli_work/experiments
  "-DCMD=$<TARGET_FILE:policy_experiments>|--steps|1|--tokens|32"
  "-DEXPECT_REGEX=vocab 151936.*\\| LoRA r=8, attention only \\(q,k,v,o\\) \\| 7168 \\|.*\\| LoRA r=64, all-linear \\| 155648 \\|.*\\| full fine-tune \\| 9822784 \\| 100.00% \\|.*vocab 2048.*\\| full fine-tune \\|"
  -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_expect.cmake)
add_test(NAME cli_policy_experiments_bad_flag COMMAND ${CMAKE_COMMAND}
  -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/cli_work/experiments "-DCMD=$<TARGET_FILE:policy_experiments>|--steps|0"
  -DEXPECT_FAIL=ON "-DEXPECT_REGEX=--steps must be positive" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_expect.cmake)

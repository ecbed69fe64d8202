# make_tiny_model and the README's walk after the quickstart (train on a model folder, chat, merge).
add_test(NAME cli_readme_tiny_model_flow
         COMMAND ${CMAKE_COMMAND} -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/cli_work/readme_tiny_model_flow
                 -DBIN_DIR=$<TARGET_FILE_DIR:make_tiny_model> -DASSETS=${PROJECT_SOURCE_DIR}/assets
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_readme_tiny_flow.cmake)
peft_program_test(make_tiny_model make_tiny_model_usage FAIL ARGS REGEX "usage: make_tiny_model DIR")

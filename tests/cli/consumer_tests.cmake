# find_package(peft) from another project, against the installed package.
add_test(NAME consumer_find_package
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/consumer
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/consumer_work -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run_consumer_test.cmake)

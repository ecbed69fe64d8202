# The installed package, used from outside the source tree: find_package(peft) with the README's
# example, pkg-config, and the installed programs with their installed assets.
add_test(NAME consumer_find_package
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/consumer
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/consumer_work -DCXX=${CMAKE_CXX_COMPILER}
                 -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run_consumer_test.cmake)

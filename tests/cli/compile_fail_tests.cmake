# Misusing a policy is a compile error with a readable message: each tests/compile_fail/*.cpp
# must fail to compile with the message its first line names.
file(GLOB PEFT_COMPILE_FAIL CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/compile_fail/*.cpp)
set(PEFT_COMPILE_FAIL_INCLUDES
    "$<JOIN:$<TARGET_PROPERTY:peft::peft,INTERFACE_INCLUDE_DIRECTORIES>,|>|$<JOIN:$<TARGET_PROPERTY:Eigen3::Eigen,INTERFACE_INCLUDE_DIRECTORIES>,|>")
foreach(src IN LISTS PEFT_COMPILE_FAIL)
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME compile_fail_${name}
           COMMAND ${CMAKE_COMMAND} -DCOMPILER=${CMAKE_CXX_COMPILER} -DSOURCE=${src}
                   "-DINCLUDES=${PEFT_COMPILE_FAIL_INCLUDES}" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_compile_fail.cmake)
endforeach()

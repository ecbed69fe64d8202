# ctest driver: install peft from the build tree into a scratch prefix, then use it as a user would,
# from a folder outside the source tree:
#   - find_package(peft): build the README's example (examples/lora_trainer.cpp) and train with it;
#   - pkg-config: build main.cpp with `c++ $(pkg-config --cflags --libs peft)` and run it;
#   - the installed programs: identity_finetune --help, a 2-step run on the installed assets,
#     PEFT_ASSETS overriding them, tokenize with the installed tokenizer.
# Arguments: -DBUILD_DIR= -DSOURCE_DIR= (tests/consumer) -DWORK_DIR= -DCXX= -DFIXTURES=
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/elsewhere)
set(prefix ${WORK_DIR}/prefix)
function(step what)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY ${WORK_DIR}/elsewhere RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(out "${out}${err}" PARENT_SCOPE)
  set(rc "${rc}" PARENT_SCOPE)
  if(NOT what STREQUAL "-" AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}${err}")
  endif()
endfunction()

step("installing peft" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f bin/identity_finetune bin/chat bin/merge_lora bin/tokenize bin/lr_epoch_sweep share/peft/assets/data/self_cognition.jsonl
          share/pkgconfig/peft.pc share/doc/peft/LICENSE include/peft/qwen.hpp)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "cmake --install left no ${f} in the prefix")
  endif()
endforeach()

# find_package(peft): the README's example, built and run on the tiny fixture with the installed tokenizer.
step("configuring the consumer against the installed peft" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build
     -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix} -DPEFT_README_EXAMPLE=${SOURCE_DIR}/../../examples/lora_trainer.cpp)
step("building the README's example against the installed peft" ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
file(GLOB model_files ${FIXTURES}/tiny_public/model/*)
file(COPY ${model_files} DESTINATION ${WORK_DIR}/elsewhere/model)
file(COPY ${prefix}/share/peft/assets/tokenizer/qwen2.5/tokenizer.json DESTINATION ${WORK_DIR}/elsewhere/model)
step("the README's example" ${WORK_DIR}/build/lora_trainer model ${FIXTURES}/tiny_public/tokens.jsonl adapter)
if(NOT out MATCHES "steps, loss [0-9.]+ -> [0-9.]+, adapter in adapter" OR NOT EXISTS ${WORK_DIR}/elsewhere/adapter/adapter_model.safetensors)
  message(FATAL_ERROR "the README's example did not train and save an adapter:\n${out}")
endif()

# pkg-config: the flags alone build a program that trains.
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} ${prefix}/share/pkgconfig)
step("pkg-config --cflags --libs peft" ${PKG_CONFIG} --cflags --libs peft)
separate_arguments(pc_flags UNIX_COMMAND "${out}")
step("building main.cpp with pkg-config's flags" ${CXX} -std=c++20 -O1 ${SOURCE_DIR}/main.cpp ${pc_flags}
     -o ${WORK_DIR}/pkg_config_consumer)
step("the pkg-config consumer (its loss must fall)" ${WORK_DIR}/pkg_config_consumer)

# The installed programs, run from a folder outside the source tree.
step("identity_finetune --help" ${prefix}/bin/identity_finetune --help)
if(NOT out MATCHES "--model")
  message(FATAL_ERROR "identity_finetune --help lists no --model:\n${out}")
endif()
step("identity_finetune on the installed assets" ${prefix}/bin/identity_finetune --max_steps 2 --output_dir run --add_version false)
if(NOT EXISTS ${WORK_DIR}/elsewhere/run/checkpoint-2/adapter_model.safetensors)
  message(FATAL_ERROR "the installed identity_finetune left no checkpoint-2:\n${out}")
endif()
if(NOT out MATCHES "dataset '${prefix}/share/peft/assets/data/self_cognition.jsonl'")
  message(FATAL_ERROR "the installed identity_finetune did not read the installed assets:\n${out}")
endif()
step("-" ${CMAKE_COMMAND} -E env PEFT_ASSETS=${WORK_DIR}/no-assets-here ${prefix}/bin/identity_finetune --max_steps 2 --output_dir run2)
if(rc EQUAL 0 OR NOT out MATCHES "no-assets-here")
  message(FATAL_ERROR "PEFT_ASSETS pointing nowhere must fail naming it (exit ${rc}):\n${out}")
endif()
file(WRITE ${WORK_DIR}/elsewhere/text.jsonl "\"hello world\"\n")
execute_process(COMMAND ${prefix}/bin/tokenize INPUT_FILE ${WORK_DIR}/elsewhere/text.jsonl WORKING_DIRECTORY ${WORK_DIR}/elsewhere
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc OR NOT out MATCHES "^\\[14990, *1879\\]")
  message(FATAL_ERROR "the installed tokenize with the installed tokenizer (exit ${rc}):\n${out}${err}")
endif()
message(STATUS "installed: library, README example, pkg-config build and programs checked in ${WORK_DIR}")

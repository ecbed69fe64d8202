# Inputs for the validation checks (issue 17), built from the tiny fixture:
#   huge_intermediate/  config.json says intermediate_size 5000000 (the weights have 176)
#   llama/              config.json says model_type llama
#   tiny/ ckpt/ ...     the chat models (make_chat_models.cmake)
# and, for chat, a stdin whose second line is not UTF-8 (bytes CMake's INPUT cannot carry).
include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
set(src ${FIXTURES}/tiny_public/model)
file(READ ${src}/config.json cfg)
foreach(case "huge_intermediate;intermediate_size;5000000" "llama;model_type;\"llama\"")
  list(GET case 0 dir)
  list(GET case 1 field)
  list(GET case 2 value)
  file(MAKE_DIRECTORY ${WORK_DIR}/${dir})
  file(COPY ${src}/model.safetensors DESTINATION ${WORK_DIR}/${dir})
  string(JSON patched SET "${cfg}" ${field} "${value}")
  file(WRITE ${WORK_DIR}/${dir}/config.json "${patched}")
endforeach()
string(ASCII 255 254 bad_bytes)
file(WRITE ${WORK_DIR}.stdin.txt "hello\nab${bad_bytes}c\nwho are you?\n")

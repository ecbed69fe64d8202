# Inputs for the bad-model checks, built from the tiny fixture: a model whose config disagrees
# with its weights, one with a truncated safetensors file, one missing its weights.
set(src ${FIXTURES}/tiny_public/model)
file(REMOVE_RECURSE ${WORK_DIR})
foreach(d wrong_shape truncated no_weights)
  file(MAKE_DIRECTORY ${WORK_DIR}/${d})
  file(COPY ${src}/config.json DESTINATION ${WORK_DIR}/${d})
endforeach()
file(COPY ${src}/model.safetensors DESTINATION ${WORK_DIR}/wrong_shape)
file(READ ${src}/config.json cfg)
string(REPLACE "\"intermediate_size\": 176" "\"intermediate_size\": 160" cfg "${cfg}")
file(WRITE ${WORK_DIR}/wrong_shape/config.json "${cfg}")
file(COPY_FILE ${FIXTURES}/bad/truncated.safetensors ${WORK_DIR}/truncated/model.safetensors)

# Inputs for the bad-model checks, built from the tiny fixture: a model whose config disagrees
# with its weights, one with a truncated safetensors file, one missing its weights, and one whose
# config describes 1 layer of the 2 its weights hold (layer 1's tensors unused: a warning, as
# transformers gives; with the tiny tokenizer, so chat runs on it).
set(src ${FIXTURES}/tiny_public/model)
file(REMOVE_RECURSE ${WORK_DIR})
foreach(d wrong_shape truncated no_weights one_layer)
  file(MAKE_DIRECTORY ${WORK_DIR}/${d})
  file(COPY ${src}/config.json DESTINATION ${WORK_DIR}/${d})
endforeach()
file(COPY ${src}/model.safetensors DESTINATION ${WORK_DIR}/wrong_shape)
file(READ ${src}/config.json cfg)
string(REPLACE "\"intermediate_size\": 176" "\"intermediate_size\": 160" cfg "${cfg}")
file(WRITE ${WORK_DIR}/wrong_shape/config.json "${cfg}")
file(COPY_FILE ${FIXTURES}/bad/truncated.safetensors ${WORK_DIR}/truncated/model.safetensors)
file(COPY ${src}/model.safetensors ${FIXTURES}/generate/tiny_tokenizer/tokenizer.json DESTINATION ${WORK_DIR}/one_layer)
file(READ ${src}/config.json cfg)
string(REPLACE "\"num_hidden_layers\": 2" "\"num_hidden_layers\": 1" cfg "${cfg}")
file(WRITE ${WORK_DIR}/one_layer/config.json "${cfg}")

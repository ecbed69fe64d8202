# A checkpoint already quantised by another tool: tiny_public's model with a GPTQ
# quantization_config in config.json, as transformers writes one.
set(src ${FIXTURES}/tiny_public/model)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/gptq)
file(COPY ${src}/model.safetensors DESTINATION ${WORK_DIR}/gptq)
file(READ ${src}/config.json cfg)
string(REPLACE "\"vocab_size\": 512" "\"vocab_size\": 512,\n  \"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}" cfg "${cfg}")
file(WRITE ${WORK_DIR}/gptq/config.json "${cfg}")

# Inputs for the chat and merge_lora checks, built from the tiny fixture:
#   tiny/         tiny_public's model with the 512-id tokenizer (tests/fixtures/generate/tiny_tokenizer)
#   ckpt/         adapter_trained plus an args.json naming tiny/ as the model (identity_finetune's layout)
#   ckpt_cfg/     adapter_trained whose adapter_config.json names tiny/ as base_model_name_or_path
#   ckpt_embedded/ an adapter config naming the embedded default model
#   no_weights/   an adapter folder with adapter_config.json only
set(tiny ${FIXTURES}/tiny_public)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(COPY ${tiny}/model/ DESTINATION ${WORK_DIR}/tiny)
file(COPY ${FIXTURES}/generate/tiny_tokenizer/tokenizer.json DESTINATION ${WORK_DIR}/tiny)
foreach(d ckpt ckpt_cfg ckpt_embedded)
  file(COPY ${tiny}/adapter_trained/ DESTINATION ${WORK_DIR}/${d})
endforeach()
file(WRITE ${WORK_DIR}/ckpt/args.json "{\"model\": \"${WORK_DIR}/tiny\", \"torch_dtype\": \"float32\"}\n")
file(READ ${tiny}/adapter_trained/adapter_config.json cfg)
string(JSON cfg_tiny SET "${cfg}" base_model_name_or_path "\"${WORK_DIR}/tiny\"")
file(WRITE ${WORK_DIR}/ckpt_cfg/adapter_config.json "${cfg_tiny}")
string(JSON cfg_embedded SET "${cfg}" base_model_name_or_path "\"peft-embedded-default\"")
file(WRITE ${WORK_DIR}/ckpt_embedded/adapter_config.json "${cfg_embedded}")
file(MAKE_DIRECTORY ${WORK_DIR}/no_weights)
file(COPY ${tiny}/adapter_trained/adapter_config.json DESTINATION ${WORK_DIR}/no_weights)

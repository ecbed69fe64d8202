# Inputs for chat on a QLoRA adapter, built from the tiny fixture: tiny/ (tiny_public's model with
# the 512-id tokenizer) and qlora_ckpt/ (its adapter with an args.json recording ms-swift's
# --quant_method bnb --quant_bits 4, as identity_finetune writes it for a QLoRA run).
set(tiny ${FIXTURES}/tiny_public)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(COPY ${tiny}/model/ DESTINATION ${WORK_DIR}/tiny)
file(COPY ${FIXTURES}/generate/tiny_tokenizer/tokenizer.json DESTINATION ${WORK_DIR}/tiny)
file(COPY ${tiny}/adapter_trained/ DESTINATION ${WORK_DIR}/qlora_ckpt)
file(WRITE ${WORK_DIR}/qlora_ckpt/args.json "{\"model\": \"${WORK_DIR}/tiny\", \"torch_dtype\": \"bfloat16\", "
  "\"quant_method\": \"bnb\", \"quant_bits\": 4, \"bnb_4bit_quant_type\": \"nf4\"}\n")

# chat as a script uses it: prompts on a pipe (or --val_dataset) in, JSONL out. On the tiny
# fixture the replies must equal HF transformers' greedy generate with the same tokenizer and
# ChatML prompt (tests/fixtures/generate/chat_golden.jsonl); on the embedded default model (real
# Qwen2.5 tokenizer, random weights) every line must parse. Bad input: a message, a non-zero exit.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(CHAT_SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake)
set(CHAT_GOLDEN ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/generate/chat_golden.jsonl)
set(CHAT_QUERIES "hello" "who are you?" "你是谁?" "Tell me a story about a cat.")
set(TINY_FIXTURE ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)

peft_program_test(chat chat_embedded_pipe ARGS --max_new_tokens 8 INPUT "hello" "你是谁?" JSONL_LINES 2
  REGEX "embedded default model")
peft_program_test(chat chat_tiny_equals_hf SETUP ${CHAT_SETUP}
  ARGS --model tiny --adapters ${TINY_FIXTURE}/adapter_trained --max_new_tokens 16 --stream true
  INPUT ${CHAT_QUERIES} JSONL_LINES 4 GOLDEN ${CHAT_GOLDEN})
peft_program_test(chat chat_base_from_args_json SETUP ${CHAT_SETUP}
  ARGS --adapters ckpt --max_new_tokens 16 INPUT ${CHAT_QUERIES} JSONL_LINES 4 GOLDEN ${CHAT_GOLDEN}
  REGEX "cli_work/chat_base_from_args_json/tiny \\+ adapter ckpt")
peft_program_test(chat chat_base_from_adapter_config SETUP ${CHAT_SETUP}
  ARGS --adapters ckpt_cfg --max_new_tokens 16 INPUT ${CHAT_QUERIES} JSONL_LINES 4 GOLDEN ${CHAT_GOLDEN})
peft_program_test(chat chat_val_dataset SETUP ${CHAT_SETUP}
  ARGS --model tiny --val_dataset ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets/query_response.jsonl --max_new_tokens 4
  JSONL_LINES 3 REGEX "\"labels\":\"16\"")
# The embedded default model (random weights, 151936 embedding rows) answers "question 33" with ids
# in the padded rows past the tokenizer's 151665 tokens; they decode to nothing, as in HF, and the
# answer (streamed or whole) is kept.
peft_program_test(chat chat_padded_vocab_ids ARGS --max_new_tokens 300 INPUT "question 33" JSONL_LINES 1)
peft_program_test(chat chat_padded_vocab_ids_stream ARGS --max_new_tokens 300 --stream true INPUT "question 33"
  JSONL_LINES 1)
# As `swift infer --val_dataset`: rows may be questions alone in every format (query, alpaca without
# output, messages/sharegpt ending with the user); a reply, when present, is recorded as the labels.
peft_program_test(chat chat_val_dataset_questions_only SETUP ${CHAT_SETUP}
  ARGS --model tiny --val_dataset ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets/questions_only.jsonl --max_new_tokens 4
  JSONL_LINES 5 REGEX "\"query\":\"hi\",\"response\":\"[^\"]+\"}.*\"labels\":\"16\",\"query\":\"16\\?\"")
peft_program_test(chat chat_bf16_sampling SETUP ${CHAT_SETUP}
  ARGS --model tiny --torch_dtype bfloat16 --temperature 0.9 --top_k 20 --top_p 0.9 --repetition_penalty 1.1 --seed 3
       --max_new_tokens 8 --verbose
  INPUT "hello" JSONL_LINES 1 REGEX "bfloat16 on cpu.*temperature 0.9 top_k 20 top_p 0.9 repetition_penalty 1.1 seed 3")

peft_program_test(chat chat_device_cuda FAIL ARGS --device cuda REGEX "not built with CUDA")
peft_program_test(chat chat_adapter_without_base FAIL ARGS --adapters ${TINY_FIXTURE}/adapter
  REGEX "adapter_config.json.*names the base model; pass --model")
peft_program_test(chat chat_no_tokenizer FAIL ARGS --model ${TINY_FIXTURE}/model INPUT "hi"
  REGEX "model/tokenizer.json: no tokenizer.json")
peft_program_test(chat chat_float16 FAIL SETUP ${CHAT_SETUP} ARGS --model tiny --torch_dtype float16
  REGEX "'float16' is not supported")
peft_program_test(chat chat_bad_top_p FAIL SETUP ${CHAT_SETUP} ARGS --model tiny --top_p 1.5 REGEX "--top_p must be")
peft_program_test(chat chat_adapter_wrong_model FAIL SETUP ${CHAT_SETUP}
  ARGS --model tiny --adapters ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/batch2_ga2_linear/adapter
  REGEX "adapter_model.safetensors.*shape")
peft_program_test(chat chat_bad_dataset_line FAIL SETUP ${CHAT_SETUP}
  ARGS --model tiny --val_dataset ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/bad/malformed_line.jsonl
  REGEX "malformed_line.jsonl:3")
peft_program_test(chat chat_missing_model FAIL ARGS --model nowhere REGEX "nowhere")
peft_program_test(chat chat_unused_checkpoint_tensors_warned SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_bad_models.cmake
  ARGS --model one_layer --max_new_tokens 2 INPUT "hello" JSONL_LINES 1
  REGEX "warning: one_layer/model.safetensors: 12 tensors of the checkpoint are not used.*and are left out")

# chat with the other `swift infer` flags: --merge_lora true decodes the merged model and still gives
# HF's replies for the unmerged adapter (the chat golden); --result_path writes the same JSONL to a
# new file (appends to one that exists: swift_flags_infer_export_tests.cmake); --infer_backend takes
# pt only; --max_batch_size is accepted; --load_data_args answers the run's recorded val_dataset, or re-derives its split_dataset_ratio hold-out
# (an explicit --val_dataset takes precedence). On a terminal (tmux): history, multi-line.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(CHAT_SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake)
set(CHAT_GOLDEN ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/generate/chat_golden.jsonl)
set(CHAT_QUERIES "hello" "who are you?" "你是谁?" "Tell me a story about a cat.")

peft_program_test(chat chat_merge_lora_equals_hf SETUP ${CHAT_SETUP}
  ARGS --adapters ckpt --merge_lora true --infer_backend pt --max_batch_size 4 --max_new_tokens 16
       --result_path answers.jsonl
  INPUT ${CHAT_QUERIES} JSONL_LINES 4 GOLDEN ${CHAT_GOLDEN} REGEX "merged into .*tiny before decoding"
  FILES answers.jsonl)
peft_program_test(chat chat_merge_lora_missing_adapters ARGS --adapters ${PEFT_CLI_WORK}/nowhere --merge_lora true
  FAIL REGEX "--adapters .*nowhere: no such folder")
peft_program_test(chat chat_infer_backend_vllm FAIL ARGS --infer_backend vllm
  REGEX "--infer_backend vllm: not available here.*--infer_backend pt")
peft_program_test(chat chat_infer_backend_unknown FAIL ARGS --infer_backend onnx
  REGEX "--infer_backend: 'onnx' is not supported \\(valid: pt\\)")
peft_program_test(chat chat_merge_lora_needs_adapters FAIL ARGS --merge_lora true REGEX "--merge_lora true needs --adapters")
peft_program_test(chat chat_load_data_args_without_val FAIL SETUP ${CHAT_SETUP} ARGS --adapters ckpt --load_data_args true
  REGEX "ckpt/args.json records no validation data \\(no val_dataset, split_dataset_ratio 0\\).*--val_dataset FILE")
peft_program_test(chat chat_load_data_args SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_run_with_val.cmake
  ARGS --adapters ckpt --load_data_args true --max_new_tokens 4 JSONL_LINES 3 REGEX "\"labels\":\"16\"")
# A run that held out split_dataset_ratio of its data: the split is re-derived from the recorded
# seed (make_run_with_split.cmake: 0.5 of 3 rows is 1 row per spec; the seed picks which).
peft_program_test(chat chat_load_data_args_split SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_run_with_split.cmake
  ARGS --adapters ckpt --load_data_args true --max_new_tokens 4 JSONL_LINES 2 REGEX "\"labels\":\"[^\"]+\".*\"labels\":")
# As ms-swift's infer: a --val_dataset given on the command line is what is answered, also with
# --load_data_args true (the run's recorded split is not).
peft_program_test(chat chat_load_data_args_and_val_dataset SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_run_with_split.cmake
  ARGS --adapters ckpt --load_data_args true --val_dataset ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets/questions_only.jsonl
       --max_new_tokens 4 JSONL_LINES 5 REGEX "\"query\":\"hi\"")
peft_program_test(chat chat_load_data_args_no_val_but_val_dataset SETUP ${CHAT_SETUP}
  ARGS --adapters ckpt --load_data_args true --val_dataset ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets/query_response.jsonl
       --max_new_tokens 4 JSONL_LINES 3)
# --result_path is checked before the model is looked at (--model nowhere would fail next) and
# nothing is written: a folder that cannot be made, a file where its folder should be.
peft_program_test(chat chat_result_path_unwritable FAIL ARGS --model nowhere --result_path /proc/nonexist/x.jsonl
  INPUT "hello" REGEX "--result_path /proc/nonexist/x.jsonl: cannot write there")
peft_program_test(chat chat_result_path_under_a_file FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_existing_output.cmake
  ARGS --model nowhere --result_path out/notes.txt/x.jsonl INPUT "hello" REGEX "--result_path out/notes.txt/x.jsonl: cannot write there")
# Ctrl-C / SIGTERM (run_stop_signal.cmake): chat, waiting on a pipe after one answer with a merged
# model in its temporary folder, publishes that answer to --result_path, removes the folder and
# exits 128 + the signal; export --check stopped while llama.cpp runs removes its folder too.
foreach(sig TERM INT)
  add_test(NAME cli_chat_stop_signal_${sig}
           COMMAND ${CMAKE_COMMAND} -DMODE=chat -DSIG=${sig} -DPROGRAM=$<TARGET_FILE:chat>
                   -DWORK_DIR=${PEFT_CLI_WORK}/chat_stop_signal_${sig} -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_stop_signal.cmake)
endforeach()
add_test(NAME cli_export_check_stop_signal
         COMMAND ${CMAKE_COMMAND} -DMODE=export -DSIG=TERM -DPROGRAM=$<TARGET_FILE:export>
                 -DWORK_DIR=${PEFT_CLI_WORK}/export_check_stop_signal -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_stop_signal.cmake)
# The interactive mode on a terminal (tmux): line history with the Up arrow, multi-line input.
add_test(NAME cli_chat_tty_history_and_multi_line
         COMMAND ${CMAKE_COMMAND} -DCHAT=$<TARGET_FILE:chat> -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_chat_tty.cmake)

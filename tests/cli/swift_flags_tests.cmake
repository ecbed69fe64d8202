# ms-swift's flags as its own parser reads them (examples/swift_flags.hpp): a bare true/false flag
# is true and never takes the next flag; flags that change nothing here are reported, never
# swallow a following flag; flags that would change the result and are not implemented are
# refused with what to do; --save_strategy / --eval_strategy / --save_only_model / --logging_dir
# act as in ms-swift. Registers the tests (from tests/CMakeLists.txt) and runs the multi-run ones
# itself (cmake -P, CASE=...).
if(NOT CMAKE_SCRIPT_MODE_FILE)
  set(tiny ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)
  set(base --model ${tiny}/model --dataset ${tiny}/tokens.jsonl --add_version false --output_dir out)
  # A bare accepted-unused flag before a real one: the real one still counts (it trained r=8).
  peft_cli_test(swift_bare_unused_flag ARGS ${base} --max_steps 1 --use_liger_kernel --lora_rank 4 --streaming
    REGEX "accepted but not used by this program: --use_liger_kernel, --streaming.*lora r=4 ")
  # Checkpoints written beside the steps (Megatron-SWIFT's --async_save, ours for every run): the
  # run waits for the last one, names it, and rotation kept one.
  peft_cli_test(swift_async_save ARGS ${base} --max_steps 4 --save_steps 2 --save_total_limit 1 --async_save true
    REGEX "last checkpoint: [^\n]*checkpoint-4")
  # ... which is the default; false saves in line, and the save's line says how long it took.
  peft_cli_test(swift_async_save_default ARGS ${base} --max_steps 2 --save_steps 1
    REGEX "checkpoint-1: contents taken in [0-9.]+ s, files written beside training")
  peft_cli_test(swift_async_save_false ARGS ${base} --max_steps 2 --save_steps 1 --async_save false
    REGEX "\\[save\\] [^\n]*checkpoint-1 in [0-9.]+ s\n")
  # A bare boolean is true and leaves the next flag alone.
  peft_cli_test(swift_bare_bool_flag ARGS ${base} --max_steps 1 --save_only_model --lora_rank 4
    REGEX "lora r=4 .*last checkpoint: [^\n]*checkpoint-1")
  peft_cli_test(swift_unsupported_flag FAIL ARGS ${base} --use_dora true
    REGEX "--use_dora true: an ms-swift flag this program does not implement; DoRA is not implemented")
  # The same flags spelling out what this program does anyway (ms-swift's defaults) are accepted.
  peft_cli_test(swift_unsupported_flag_default_values ARGS ${base} --max_steps 1 --use_dora 0 --init_weights true
      --modules_to_save --packing False --loss_scale default --lora_rank 4
    REGEX "accepted but not used by this program: --use_dora, --init_weights, --modules_to_save, --packing, --loss_scale\n.*lora r=4 ")
  peft_cli_test(swift_unsupported_flag_other_value FAIL ARGS ${base} --modules_to_save embed_tokens lm_head
    REGEX "--modules_to_save embed_tokens lm_head: an ms-swift flag this program does not implement; full-rank")
  peft_cli_test(swift_unsupported_bare_flag FAIL ARGS ${base} --packing --max_steps 1
    REGEX "--packing: an ms-swift flag[^\n]*--accumulation_pack_tokens")
  peft_cli_test(swift_other_family FAIL ARGS ${base} --template llama3
    REGEX "--template llama3: this program runs Qwen2 / Qwen2.5 models only")
  peft_cli_test(swift_qwen_template ARGS ${base} --max_steps 1 --template qwen2_5 --model_type qwen2_5
    REGEX "accepted but not used by this program: [^\n]*--model_type, --template")
  peft_cli_test(swift_lora_bias FAIL ARGS ${base} --lora_bias all REGEX "--lora_bias all: only 'none' is implemented")
  peft_cli_test(swift_push_to_hub FAIL ARGS ${base} --push_to_hub true REGEX "--push_to_hub true: this program uploads nothing")
  peft_cli_test(swift_tuner_type_conflict FAIL ARGS ${base} --tuner_type full --train_type lora
    REGEX "--tuner_type full and --train_type lora disagree")
  # HF's "best" saves at evaluations that improve the metric: a run without any is refused.
  peft_cli_test(swift_save_strategy_best_without_evals FAIL ARGS ${base} --save_strategy best
    REGEX "--save_strategy best saves a checkpoint when an evaluation improves eval_loss, and this run evaluates nothing")
  peft_cli_test(swift_save_strategy_best_eval_no FAIL ARGS ${base} --save_strategy best --eval_strategy no
    REGEX "--save_strategy best needs evaluations: --eval_strategy no makes none")
  peft_cli_test(swift_load_best_needs_saves FAIL ARGS ${base} --save_strategy no --load_best_model_at_end
    REGEX "--load_best_model_at_end needs --eval_strategy and --save_strategy to be the same, and not 'no'")
  peft_cli_test(swift_quant_method_alone FAIL ARGS ${base} --quant_method bnb
    REGEX "--quant_method bnb needs --quant_bits 4 \\(NF4, QLoRA\\)")
  peft_cli_test(swift_early_stop_without_evals FAIL ARGS ${base} --save_strategy no --early_stop_patience 1
    REGEX "--early_stop_patience 1 with --eval_strategy no: early stopping watches evaluations")
  peft_cli_test(swift_full_best_without_masters FAIL ARGS ${base} --train_type full --save_only_model
       --load_best_model_at_end
    REGEX "--load_best_model_at_end true with --train_type full and --save_only_model true")
  foreach(case strategies save_only_model logging_dir early_stop_interval rslora)
    add_test(NAME cli_swift_flags_${case}
      COMMAND ${CMAKE_COMMAND} -DCASE=${case} -DFT=$<TARGET_FILE:identity_finetune>
              -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures -DWORK=${PEFT_CLI_WORK}/swift_flags_${case}
              -P ${CMAKE_CURRENT_LIST_FILE})
  endforeach()
  return()
endif()

# --- script mode -------------------------------------------------------------------------------
include(${CMAKE_CURRENT_LIST_DIR}/run_checked.cmake)
function(run_ft out_var)  # identity_finetune on the tiny fixture in WORK, exit 0 required
  run_checked(out ${CMAKE_COMMAND} -E chdir ${WORK} ${FT} --model ${FIXTURES}/tiny_public/model
              --dataset ${FIXTURES}/tiny_public/tokens.jsonl --add_version false ${ARGN})
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

# identity_finetune on the tiny fixture in WORK, which must fail with stderr matching `regex`.
function(expect_ft_error regex)
  execute_process(COMMAND ${FT} --model ${FIXTURES}/tiny_public/model --dataset ${FIXTURES}/tiny_public/tokens.jsonl
                          --add_version false ${ARGN}
                  WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "${regex}")
    message(FATAL_ERROR "expected an error matching '${regex}', got rc ${rc}: ${ARGN}\n${out}${err}")
  endif()
endfunction()

# The steps of the checkpoints in dir, ascending, and how many evaluation entries its log holds.
function(checkpoints_and_evals dir ckpt_var eval_var)
  file(GLOB found RELATIVE ${dir} ${dir}/checkpoint-*)
  set(steps)
  foreach(c ${found})
    string(REPLACE "checkpoint-" "" n ${c})
    list(APPEND steps ${n})
  endforeach()
  list(SORT steps COMPARE NATURAL)
  file(STRINGS ${dir}/logging.jsonl lines)
  set(evals 0)
  foreach(l ${lines})
    if(l MATCHES "\"eval_loss\"" AND NOT l MATCHES "\"log_history\"")  # not ms-swift's summary line
      math(EXPR evals "${evals} + 1")
    endif()
  endforeach()
  set(${ckpt_var} "${steps}" PARENT_SCOPE)
  set(${eval_var} ${evals} PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

if(CASE STREQUAL "strategies")
  # 12 train rows (4 held out), batch 1, GA 4: 3 steps an epoch, 2 epochs = 6 steps.
  set(common --split_dataset_ratio 0.25 --gradient_accumulation_steps 4 --num_train_epochs 2 --logging_steps 1
      --save_total_limit 0)
  run_ft(out ${common} --output_dir steps --save_steps 2)
  checkpoints_and_evals(${WORK}/steps ck ev)
  if(NOT ck STREQUAL "2;4;6" OR NOT ev EQUAL 3)
    message(FATAL_ERROR "steps: checkpoints '${ck}' (expected 2;4;6), ${ev} evaluations (expected 3)")
  endif()
  run_ft(out ${common} --output_dir epoch --save_steps 2 --save_strategy epoch)  # eval follows save
  checkpoints_and_evals(${WORK}/epoch ck ev)
  if(NOT ck STREQUAL "3;6" OR NOT ev EQUAL 2)
    message(FATAL_ERROR "epoch: checkpoints '${ck}' (expected 3;6), ${ev} evaluations (expected 2)")
  endif()
  run_ft(out ${common} --output_dir evalno --save_steps 2 --eval_strategy no)
  checkpoints_and_evals(${WORK}/evalno ck ev)
  if(NOT ck STREQUAL "2;4;6" OR NOT ev EQUAL 0)
    message(FATAL_ERROR "eval no: checkpoints '${ck}' (expected 2;4;6), ${ev} evaluations (expected 0)")
  endif()
  run_ft(out ${common} --output_dir saveno --save_steps 2 --save_strategy no)
  checkpoints_and_evals(${WORK}/saveno ck ev)
  if(NOT ck STREQUAL "" OR NOT ev EQUAL 0 OR NOT out MATCHES "no checkpoint written \\(--save_strategy no\\)")
    message(FATAL_ERROR "save no: checkpoints '${ck}' (expected none), ${ev} evaluations (expected 0):\n${out}")
  endif()
  file(STRINGS ${WORK}/saveno/logging.jsonl lines ENCODING UTF-8)  # the statistics hold a "±"
  list(GET lines -1 summary)
  string(JSON last GET "${summary}" last_model_checkpoint)
  if(NOT last STREQUAL "null" AND NOT last STREQUAL "")
    message(FATAL_ERROR "save no: the summary line names a checkpoint: ${summary}")
  endif()
  # best: a checkpoint at each evaluation that improved the metric (HF's SaveStrategy.BEST), read
  # from the run's own log; with greater_is_better the first evaluation and each rise.
  foreach(greater false true)
    run_ft(out ${common} --output_dir best_${greater} --save_strategy best --eval_steps 1 --greater_is_better ${greater})
    checkpoints_and_evals(${WORK}/best_${greater} ck ev)
    file(STRINGS ${WORK}/best_${greater}/logging.jsonl lines ENCODING UTF-8)
    set(want)
    set(best "")
    foreach(l ${lines})
      if(NOT l MATCHES "\"eval_loss\"" OR l MATCHES "\"log_history\"")
        continue()
      endif()
      string(JSON loss GET "${l}" eval_loss)
      string(JSON step GET "${l}" step)
      set(better FALSE)  # if(LESS / GREATER) compare numbers as doubles
      if(best STREQUAL "" OR (greater STREQUAL "true" AND loss GREATER best) OR
         (greater STREQUAL "false" AND loss LESS best))
        set(better TRUE)
      endif()
      if(better)
        list(APPEND want ${step})
        set(best ${loss})
      endif()
    endforeach()
    list(GET want -1 best_step)
    if(NOT ev EQUAL 6 OR NOT ck STREQUAL "${want}" OR NOT out MATCHES "last checkpoint: [^\n]*checkpoint-${best_step}")
      message(FATAL_ERROR "best (greater_is_better ${greater}): checkpoints '${ck}', expected '${want}' from the "
                          "log's eval_loss; ${ev} evaluations (expected 6)\n${out}")
    endif()
    file(READ ${WORK}/best_${greater}/checkpoint-${best_step}/trainer_state.json state)
    string(JSON best_ckpt GET "${state}" best_model_checkpoint)
    if(NOT best_ckpt MATCHES "checkpoint-${best_step}$")
      message(FATAL_ERROR "best: trainer_state.json names ${best_ckpt} as the best checkpoint")
    endif()
  endforeach()
  return()
endif()

if(CASE STREQUAL "rslora")
  # --use_rslora true (PEFT's rank-stabilised LoRA) scales the update by alpha / sqrt(r): the run is
  # plain LoRA with alpha x sqrt(r), loss for loss, and not the run with alpha itself. The adapter
  # says so, a run from it keeps it, and a run that contradicts it is refused.
  set(common --max_steps 4 --logging_steps 1 --learning_rate 1e-2 --lr_scheduler_type constant --lora_rank 8)
  run_ft(rs ${common} --output_dir rs --use_rslora true --lora_alpha 32)
  run_ft(same ${common} --output_dir same --lora_alpha 90.50966799187809)  # 32 x sqrt(8)
  run_ft(plain ${common} --output_dir plain --lora_alpha 32)
  function(losses dir var)
    file(STRINGS ${WORK}/${dir}/logging.jsonl lines ENCODING UTF-8)
    set(found)
    foreach(l ${lines})
      if(l MATCHES "\"log_history\"")  # ms-swift's summary line repeats them
        continue()
      endif()
      if(l MATCHES "\"loss\": *([-0-9.eE+]+)")
        list(APPEND found ${CMAKE_MATCH_1})
      endif()
    endforeach()
    set(${var} "${found}" PARENT_SCOPE)
  endfunction()
  losses(rs l_rs)
  losses(same l_same)
  losses(plain l_plain)
  list(LENGTH l_rs n)
  if(NOT n EQUAL 4 OR NOT l_rs STREQUAL l_same OR l_rs STREQUAL l_plain)
    message(FATAL_ERROR "rslora losses ${l_rs}, alpha 32 sqrt(8) ${l_same} (expected equal), alpha 32 ${l_plain} "
                        "(expected different)")
  endif()
  if(NOT rs MATCHES "alpha=32 rslora \\(scaling 11.3137\\)")
    message(FATAL_ERROR "the hparams line does not show the rank-stabilised scaling:\n${rs}")
  endif()
  file(READ ${WORK}/rs/checkpoint-4/adapter_config.json config)
  string(JSON on GET "${config}" use_rslora)
  file(READ ${WORK}/rs/args.json args)
  string(JSON recorded GET "${args}" use_rslora)
  if(NOT on STREQUAL "ON" OR NOT recorded STREQUAL "ON")
    message(FATAL_ERROR "use_rslora: adapter_config.json ${on}, args.json ${recorded} (expected true)")
  endif()
  run_ft(from --max_steps 1 --output_dir from --adapters rs/checkpoint-4)
  if(NOT from MATCHES "rslora \\(scaling 11.3137\\)")
    message(FATAL_ERROR "a run from the rsLoRA adapter lost its scaling:\n${from}")
  endif()
  expect_ft_error("--use_rslora false conflicts with --adapters: .*use_rslora = true"
                  --output_dir against --max_steps 1 --adapters rs/checkpoint-4 --use_rslora false)
  return()
endif()

if(CASE STREQUAL "save_only_model")
  run_ft(out --output_dir run --max_steps 2 --save_steps 1 --save_only_model true)
  foreach(n 1 2)
    if(NOT EXISTS ${WORK}/run/checkpoint-${n}/adapter_model.safetensors OR EXISTS ${WORK}/run/checkpoint-${n}/optimizer.safetensors)
      message(FATAL_ERROR "checkpoint-${n}: expected the adapter without optimizer.safetensors")
    endif()
  endforeach()
  expect_ft_error("checkpoint-1: no optimizer.safetensors \\(saved with --save_only_model true\\)"
                  --output_dir run --max_steps 2 --save_steps 1 --save_only_model true
                  --resume_from_checkpoint run/checkpoint-1)
  return()
endif()

if(CASE STREQUAL "logging_dir")
  # ms-swift's default report_to is tensorboard: events in <run>/runs, or in --logging_dir.
  run_ft(out --output_dir plain --max_steps 2)
  file(GLOB events ${WORK}/plain/runs/events.out.tfevents.*)
  run_ft(out --output_dir moved --max_steps 2 --logging_dir ${WORK}/tb)
  file(GLOB moved ${WORK}/tb/events.out.tfevents.*)
  if(NOT events OR NOT moved OR EXISTS ${WORK}/moved/runs)
    message(FATAL_ERROR "events: default '${events}', --logging_dir '${moved}'")
  endif()
  run_ft(out --output_dir none --max_steps 2 --report_to none)
  if(EXISTS ${WORK}/none/runs)
    message(FATAL_ERROR "--report_to none wrote events")
  endif()
  return()
endif()

if(CASE STREQUAL "early_stop_interval")
  # ms-swift's name for the patience: the same run as --early_stop_patience 2 (eval_tests.cmake's
  # early_stopping setup, whose held-out loss turns up) stops at the same step.
  set(common --split_dataset_ratio 0.25 --learning_rate 5e-2 --lr_scheduler_type constant --num_train_epochs 20
      --eval_steps 2 --save_steps 2 --save_total_limit 1)
  run_ft(a ${common} --output_dir interval --early_stop_interval 2)
  run_ft(b ${common} --output_dir patience --early_stop_patience 2)
  string(REGEX MATCH "early stopping at step [0-9]+" sa "${a}")
  string(REGEX MATCH "early stopping at step [0-9]+" sb "${b}")
  if(NOT sa OR NOT sa STREQUAL sb)
    message(FATAL_ERROR "--early_stop_interval 2: '${sa}', --early_stop_patience 2: '${sb}'\n${a}")
  endif()
  file(READ ${WORK}/interval/args.json args)
  string(JSON patience GET "${args}" early_stop_patience)
  if(NOT patience EQUAL 2)
    message(FATAL_ERROR "args.json records early_stop_patience ${patience} for --early_stop_interval 2")
  endif()
  return()
endif()

message(FATAL_ERROR "unknown CASE ${CASE}")

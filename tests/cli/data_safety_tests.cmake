# A program never loses a user's work (issue 17): each case runs the programs as a user would, on
# the tiny fixture, and then checks that the user's files are still there, byte for byte.
#   merge_*        merge_lora --output_dir: refuses input folders and their parents (even with
#                  --overwrite), refuses a non-empty folder without --overwrite, and with it replaces
#                  only a merged model (merge_lora's or export's), never a folder with other files
#   export_*       export --merge_lora --overwrite replaces a merged model as merge_lora does; a
#                  refused or failed export leaves nothing it created and every file it found
#   output_*       identity_finetune --add_version false into a non-empty folder; run.lock;
#                  save_total_limit deletes only the current run's checkpoints (0: keeps all);
#                  --overwrite never replaces a checkpoint-N another run (or the user) left; a full
#                  fine-tune's checkpoint carries the tokenizer (a model folder of its own)
#   resume_*       --output_dir honoured on resume; a checkpoint copied into a user's folder starts
#                  a new run folder; settings compared with the checkpoint's before anything is
#                  written; --adapters without --model trains the recorded base; damaged
#                  or missing peft_state.json refused, a checkpoint from before it resumes;
#                  staging left by killed saves cleaned
#   signal_*       SIGINT / SIGTERM: the step ends, a checkpoint is saved, exit 130 / 143
#   log_disk_full  a failed logging.jsonl write is an error
#   sweep_*        lr_epoch_sweep refuses a folder whose cells had other settings
# This file both registers the tests (included from tests/CMakeLists.txt) and runs them (cmake -P).
if(NOT CMAKE_SCRIPT_MODE_FILE)
  foreach(case merge_output_holds_inputs merge_output_not_empty merge_overwrite_only_merged_models
          export_failure_leaves_nothing output_not_empty output_rotation_only_own_run
          output_overwrite_keeps_foreign_checkpoints output_save_total_limit_zero output_full_checkpoint_is_a_model
          output_run_lock output_failed_run_leaves_no_folder resume_into_new_folder resume_checkpoint_in_user_folder
          resume_refused_writes_nothing resume_adapters_recorded_base resume_settings_mismatch resume_damaged_state
          resume_before_state_split resume_cleans_staging signal_sigint_saves signal_sigterm_saves log_disk_full sweep_other_settings)
    add_test(NAME cli_data_safety_${case}
      COMMAND ${CMAKE_COMMAND} -DCASE=${case} -DFT=$<TARGET_FILE:identity_finetune> -DMERGE=$<TARGET_FILE:merge_lora>
              -DEXPORT=$<TARGET_FILE:export>
              -DSWEEP=$<TARGET_FILE:lr_epoch_sweep> -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures
              -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/cli_work/data_safety_${case} -P ${CMAKE_CURRENT_LIST_FILE})
  endforeach()
  return()
endif()

set(TINY ${FIXTURES}/tiny_public)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(ft_base --model ${TINY}/model --dataset ${TINY}/tokens.jsonl --add_version false --logging_steps 1)

# run(<expect: OK | FAIL | exit code> <program> args...): runs in WORK_DIR; `last` holds the output.
function(run expect)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(all "${out}${err}")
  if(NOT rc MATCHES "^[0-9]+$")
    message(FATAL_ERROR "did not exit normally (${rc}): ${ARGN}\n${all}")
  elseif(expect STREQUAL "OK" AND NOT rc EQUAL 0)
    message(FATAL_ERROR "expected success, got ${rc}: ${ARGN}\n${all}")
  elseif(expect STREQUAL "FAIL" AND rc EQUAL 0)
    message(FATAL_ERROR "expected an error, got exit 0: ${ARGN}\n${all}")
  elseif(expect MATCHES "^[0-9]+$" AND NOT rc EQUAL expect)
    message(FATAL_ERROR "expected exit ${expect}, got ${rc}: ${ARGN}\n${all}")
  endif()
  set(last "${all}" PARENT_SCOPE)
endfunction()

function(expect_output regex)
  if(NOT last MATCHES "${regex}")
    message(FATAL_ERROR "output does not match '${regex}':\n${last}")
  endif()
endfunction()

function(expect_exists)
  foreach(f ${ARGN})
    if(NOT EXISTS ${WORK_DIR}/${f})
      message(FATAL_ERROR "${f} should exist:\n${last}")
    endif()
  endforeach()
endfunction()

function(expect_missing)
  foreach(f ${ARGN})
    if(EXISTS ${WORK_DIR}/${f})
      message(FATAL_ERROR "${f} should not exist:\n${last}")
    endif()
  endforeach()
endfunction()

# fingerprint(var dir): every file under dir with its SHA-256, to show nothing was touched.
function(fingerprint var dir)
  file(GLOB_RECURSE files RELATIVE ${WORK_DIR}/${dir} ${WORK_DIR}/${dir}/*)
  list(SORT files)
  set(acc "")
  foreach(f ${files})
    file(SHA256 ${WORK_DIR}/${dir}/${f} h)
    string(APPEND acc "${f} ${h}\n")
  endforeach()
  set(${var} "${acc}" PARENT_SCOPE)
endfunction()

# A failed run leaves nothing in the folder it was given.
function(expect_nothing_in dir)
  file(GLOB left ${WORK_DIR}/${dir}/*)
  if(left)
    message(FATAL_ERROR "${dir} should hold nothing, holds ${left}:\n${last}")
  endif()
endfunction()

function(expect_unchanged before dir)
  fingerprint(after ${dir})
  if(NOT before STREQUAL after)
    message(FATAL_ERROR "${dir} changed.\nbefore:\n${before}\nafter:\n${after}\noutput:\n${last}")
  endif()
endfunction()

function(json_get var file)
  file(READ ${WORK_DIR}/${file} text)
  string(JSON v GET "${text}" ${ARGN})
  set(${var} "${v}" PARENT_SCOPE)
endfunction()

if(CASE STREQUAL "merge_output_holds_inputs")
  # A training run (the adapter's checkpoint inside it) and a models folder (the base inside it).
  include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
  file(MAKE_DIRECTORY ${WORK_DIR}/run ${WORK_DIR}/models)
  file(RENAME ${WORK_DIR}/ckpt ${WORK_DIR}/run/checkpoint-16)
  file(WRITE ${WORK_DIR}/run/logging.jsonl "{\"step\": 1}\n")
  file(RENAME ${WORK_DIR}/tiny ${WORK_DIR}/models/tiny)
  fingerprint(run_before run)
  fingerprint(models_before models)
  foreach(overwrite false true)
    foreach(out run run/checkpoint-16 run/ .)
      run(FAIL ${MERGE} --model models/tiny --adapters run/checkpoint-16 --output_dir ${out} --overwrite ${overwrite})
      expect_output("--output_dir .* is an input folder \\(the (adapter|base model) .*\\) or one of its parents")
    endforeach()
    run(FAIL ${MERGE} --model models/tiny --adapters run/checkpoint-16 --output_dir models --overwrite ${overwrite})
    expect_output("--output_dir models is an input folder \\(the base model models/tiny\\)")
  endforeach()
  expect_unchanged("${run_before}" run)
  expect_unchanged("${models_before}" models)
  # Inside an input folder is fine: nothing there is replaced.
  run(OK ${MERGE} --model models/tiny --adapters run/checkpoint-16 --output_dir run/merged)
  expect_exists(run/merged/model.safetensors run/checkpoint-16/adapter_model.safetensors run/logging.jsonl)

elseif(CASE STREQUAL "merge_output_not_empty")
  include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
  file(WRITE ${WORK_DIR}/keep/notes.txt "the user's notes\n")
  fingerprint(keep_before keep)
  run(FAIL ${MERGE} --model tiny --adapters ckpt --output_dir keep)
  expect_output("--output_dir keep: the folder exists and is not empty; pass --overwrite true")
  expect_unchanged("${keep_before}" keep)
  # The default output folder from an earlier merge: refused the same way.
  run(OK ${MERGE} --model tiny --adapters ckpt)
  run(FAIL ${MERGE} --model tiny --adapters ckpt)
  expect_output("ckpt-merged: the folder exists and is not empty")
  # An empty folder is used; --overwrite replaces a merged model, atomically (no staging left), but
  # not a folder holding the user's files.
  file(MAKE_DIRECTORY ${WORK_DIR}/empty)
  run(OK ${MERGE} --model tiny --adapters ckpt --output_dir empty)
  run(OK ${MERGE} --model tiny --adapters ckpt --overwrite true)
  run(FAIL ${MERGE} --model tiny --adapters ckpt --output_dir keep --overwrite true)
  expect_output("--output_dir keep: holds an entry that a merge does not write \\(notes.txt\\)")
  expect_unchanged("${keep_before}" keep)
  expect_exists(ckpt-merged/model.safetensors ckpt-merged/config.json empty/model.safetensors)
  file(GLOB staging ${WORK_DIR}/*.tmp-* ${WORK_DIR}/*.old-*)
  if(staging)
    message(FATAL_ERROR "staging folders left behind: ${staging}")
  endif()

elseif(CASE STREQUAL "merge_overwrite_only_merged_models")
  include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
  # export --merge_lora --overwrite replaces merge_lora's output, and merge_lora export's (its
  # model.gguf and Modelfile are a merge's files too).
  run(OK ${MERGE} --model tiny --adapters ckpt --output_dir m2)
  run(OK ${EXPORT} --model tiny --adapters ckpt --merge_lora true --output_dir m2 --overwrite true)
  run(OK ${EXPORT} --model tiny --adapters ckpt --merge_lora true --to_ollama true --output_dir m2 --overwrite true)
  expect_exists(m2/model.safetensors m2/config.json m2/model.gguf m2/Modelfile)
  run(OK ${MERGE} --model tiny --adapters ckpt --output_dir m2 --overwrite true)
  expect_exists(m2/model.safetensors m2/config.json)
  expect_missing(m2/model.gguf m2/Modelfile)
  # The user's notes and a subfolder in it: both programs refuse, naming them, and touch nothing.
  file(WRITE ${WORK_DIR}/m2/mynotes.txt "the user's notes\n")
  file(WRITE ${WORK_DIR}/m2/sub/data "the user's data\n")
  fingerprint(m2_before m2)
  run(FAIL ${MERGE} --model tiny --adapters ckpt --output_dir m2 --overwrite true)
  expect_output("--output_dir m2: holds 2 entries that a merge does not write \\(mynotes.txt, sub/\\)")
  run(FAIL ${EXPORT} --model tiny --adapters ckpt --merge_lora true --to_gguf true --output_dir m2 --overwrite true)
  expect_output("--output_dir m2: holds 2 entries that a merge does not write \\(mynotes.txt, sub/\\)")
  expect_unchanged("${m2_before}" m2)
  file(GLOB staging ${WORK_DIR}/*.tmp-* ${WORK_DIR}/*.old-*)
  if(staging)
    message(FATAL_ERROR "staging folders left behind: ${staging}")
  endif()

elseif(CASE STREQUAL "export_failure_leaves_nothing")
  include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
  # An adapter whose run trained with a system prompt holding """, which a Modelfile cannot quote:
  # refused before anything is written.
  file(COPY ${WORK_DIR}/ckpt/ DESTINATION ${WORK_DIR}/ckpt_quotes)
  file(WRITE ${WORK_DIR}/ckpt_quotes/args.json
       "{\"model\": \"${WORK_DIR}/tiny\", \"system\": \"say \\u0022\\u0022\\u0022 hi\"}\n")
  file(WRITE ${WORK_DIR}/mine/notes.txt "keep me\n")
  fingerprint(mine_before mine)
  foreach(out ol mine)
    run(FAIL ${EXPORT} --adapters ckpt_quotes --to_ollama true --output_dir ${out})
    expect_output("the system prompt holds \"\"\", which a Modelfile cannot quote")
    run(FAIL ${EXPORT} --adapters ckpt_quotes --merge_lora true --to_ollama true --output_dir ${out})
  endforeach()
  expect_missing(ol)
  expect_unchanged("${mine_before}" mine)
  # A base refused once export has made its output folder (config.json disagrees with the weights):
  # the folders it made are removed, a folder it found keeps exactly what it held.
  file(COPY ${WORK_DIR}/tiny/ DESTINATION ${WORK_DIR}/wrong)
  file(READ ${WORK_DIR}/wrong/config.json cfg)
  string(REPLACE "\"intermediate_size\": 176" "\"intermediate_size\": 160" cfg "${cfg}")
  file(WRITE ${WORK_DIR}/wrong/config.json "${cfg}")
  foreach(out new/gguf mine)
    run(FAIL ${EXPORT} --model wrong --to_ollama true --output_dir ${out})
    expect_output("wrong/model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight'.*describe different models")
  endforeach()
  run(FAIL ${EXPORT} --model wrong --adapters ckpt --merge_lora true --to_gguf true --output_dir m)
  expect_output("describe different models")
  run(FAIL ${MERGE} --model wrong --adapters ckpt --output_dir m)
  expect_output("describe different models")
  expect_missing(new m)
  expect_unchanged("${mine_before}" mine)

elseif(CASE STREQUAL "output_not_empty")
  file(WRITE ${WORK_DIR}/out/notes.txt "the user's notes\n")
  fingerprint(before out)
  run(FAIL ${FT} ${ft_base} --max_steps 2 --output_dir out)
  expect_output("--output_dir out: the folder exists and is not empty.*--overwrite true")
  expect_unchanged("${before}" out)
  run(OK ${FT} ${ft_base} --max_steps 2 --output_dir out --overwrite true)
  expect_exists(out/notes.txt out/checkpoint-2/adapter_model.safetensors)
  expect_missing(out/run.lock)

elseif(CASE STREQUAL "output_rotation_only_own_run")
  # Run A keeps all its checkpoints; run B into the same folder (--overwrite) keeps 1 of its own.
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir shared)
  fingerprint(a_ckpt2 shared/checkpoint-2)
  fingerprint(a_ckpt4 shared/checkpoint-4)
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 3 --save_total_limit 1 --output_dir shared --overwrite true)
  expect_exists(shared/checkpoint-6/adapter_model.safetensors)
  expect_missing(shared/checkpoint-3)
  expect_unchanged("${a_ckpt2}" shared/checkpoint-2)
  expect_unchanged("${a_ckpt4}" shared/checkpoint-4)
  json_get(id_a shared/checkpoint-4/peft_state.json run_id)
  json_get(id_b shared/checkpoint-6/peft_state.json run_id)
  if(id_a STREQUAL "" OR id_a STREQUAL id_b)
    message(FATAL_ERROR "the two runs should record different run ids: '${id_a}' '${id_b}'")
  endif()
  # B's log is B's alone: 6 steps, not A's 4 before them.
  file(STRINGS ${WORK_DIR}/shared/logging.jsonl lines REGEX "^[^[]*\"loss\"" ENCODING UTF-8)  # not the summary
  list(LENGTH lines n)
  if(NOT n EQUAL 6)
    message(FATAL_ERROR "logging.jsonl should hold run B's 6 steps, holds ${n} train entries")
  endif()

elseif(CASE STREQUAL "output_overwrite_keeps_foreign_checkpoints")
  # Run A saves checkpoint-2 and -4; the user keeps notes in a checkpoint-1 folder of their own.
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir shared)
  file(WRITE ${WORK_DIR}/shared/checkpoint-1/notes.txt "mine\n")
  fingerprint(user shared/checkpoint-1)
  fingerprint(a2 shared/checkpoint-2)
  fingerprint(a4 shared/checkpoint-4)
  # B would save every step (1, 2, 3): refused before training, nothing of A's or the user's touched.
  run(FAIL ${FT} ${ft_base} --max_steps 3 --save_steps 1 --output_dir shared --overwrite true)
  expect_output("shared holds checkpoint-1, checkpoint-2, not written by this run; this run would save")
  expect_unchanged("${user}" shared/checkpoint-1)
  expect_unchanged("${a2}" shared/checkpoint-2)
  # C saves only step 3 (and rotates only its own): it runs, and leaves the others alone.
  run(OK ${FT} ${ft_base} --max_steps 3 --save_steps 3 --save_total_limit 1 --output_dir shared --overwrite true)
  expect_exists(shared/checkpoint-3/adapter_model.safetensors)
  expect_unchanged("${user}" shared/checkpoint-1)
  expect_unchanged("${a2}" shared/checkpoint-2)
  expect_unchanged("${a4}" shared/checkpoint-4)

elseif(CASE STREQUAL "output_save_total_limit_zero")
  # HF's rule: a limit of 0 (or below) rotates nothing.
  run(OK ${FT} ${ft_base} --max_steps 3 --save_steps 1 --save_total_limit 0 --output_dir out)
  expect_exists(out/checkpoint-1 out/checkpoint-2 out/checkpoint-3)

elseif(CASE STREQUAL "output_full_checkpoint_is_a_model")
  # A full fine-tune's checkpoint is a model folder: config, weights, and the base's tokenizer files.
  run(OK ${FT} ${ft_base} --train_type full --max_steps 1 --output_dir full)
  expect_exists(full/checkpoint-1/config.json full/checkpoint-1/model.safetensors
                full/checkpoint-1/generation_config.json)
  run(OK ${FT} --dataset ${FIXTURES}/../../assets/data/self_cognition.jsonl --train_type full --max_steps 1
      --add_version false --output_dir embedded_full)
  expect_exists(embedded_full/checkpoint-1/tokenizer.json embedded_full/checkpoint-1/tokenizer_config.json)

elseif(CASE STREQUAL "output_run_lock")
  # pid 1 is always alive: the folder is another run's.
  file(WRITE ${WORK_DIR}/out/run.lock "1\n")
  run(FAIL ${FT} ${ft_base} --max_steps 2 --output_dir out --overwrite true)
  expect_output("out is in use by another run \\(pid 1, see out/run.lock\\)")
  expect_missing(out/checkpoint-2 out/logging.jsonl)
  # A pid that cannot exist: a lock left by a killed run is taken over, then released.
  file(WRITE ${WORK_DIR}/out/run.lock "999999999\n")
  run(OK ${FT} ${ft_base} --max_steps 2 --output_dir out --overwrite true)
  expect_output("the run that held it \\(pid 999999999\\) is gone; taking the folder over")
  expect_exists(out/checkpoint-2/adapter_model.safetensors)
  expect_missing(out/run.lock)

elseif(CASE STREQUAL "output_failed_run_leaves_no_folder")
  # The version folder is created (and locked) before the model loads; a run that fails before
  # writing anything into it removes it again.
  run(FAIL ${FT} --model ${TINY}/model --dataset nowhere.jsonl --max_steps 2 --output_dir out)
  expect_nothing_in(out)
  # The folders it had to make for --output_dir go too, with or without a version folder; a folder
  # the user made stays, empty as it was.
  run(FAIL ${FT} --model ${TINY}/model --dataset nowhere.jsonl --max_steps 2 --output_dir fresh/nested)
  run(FAIL ${FT} --model ${TINY}/model --dataset nowhere.jsonl --max_steps 2 --output_dir plain/run --add_version false)
  file(MAKE_DIRECTORY ${WORK_DIR}/mine)
  run(FAIL ${FT} --model ${TINY}/model --dataset nowhere.jsonl --max_steps 2 --output_dir mine --add_version false)
  foreach(gone fresh plain)
    if(EXISTS ${WORK_DIR}/${gone})
      message(FATAL_ERROR "${gone}/ was made by a failed run and left behind:\n${last}")
    endif()
  endforeach()
  if(NOT IS_DIRECTORY ${WORK_DIR}/mine)
    message(FATAL_ERROR "the user's empty folder mine/ was removed:\n${last}")
  endif()
  expect_nothing_in(mine)

elseif(CASE STREQUAL "resume_into_new_folder")
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 2 --output_dir A)
  fingerprint(a_before A)
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 2 --save_total_limit 1 --output_dir branch
      --resume_from_checkpoint A/checkpoint-2)
  expect_output("resuming .*A/checkpoint-2 into a new run folder branch")
  expect_unchanged("${a_before}" A)
  expect_exists(branch/checkpoint-6/adapter_model.safetensors branch/args.json branch/logging.jsonl)
  json_get(from branch/resume_source.json resumed_from)
  if(NOT from MATCHES "/A/checkpoint-2$")
    message(FATAL_ERROR "resume_source.json should name A/checkpoint-2, names ${from}")
  endif()
  # The branch continued A exactly: its last adapter is A's.
  file(SHA256 ${WORK_DIR}/A/checkpoint-6/adapter_model.safetensors a)
  file(SHA256 ${WORK_DIR}/branch/checkpoint-6/adapter_model.safetensors b)
  if(NOT a STREQUAL b)
    message(FATAL_ERROR "the branch's checkpoint-6 differs from A's")
  endif()
  # Versioned: a new vN- folder under the given --output_dir.
  run(OK ${FT} --model ${TINY}/model --dataset ${TINY}/tokens.jsonl --logging_steps 1 --max_steps 6 --save_steps 2
      --output_dir branches --resume_from_checkpoint A/checkpoint-4)
  file(GLOB sources ${WORK_DIR}/branches/v0-*/resume_source.json)
  if(NOT sources)
    message(FATAL_ERROR "no branches/v0-*/resume_source.json:\n${last}")
  endif()
  expect_unchanged("${a_before}" A)
  # Without --output_dir the run continues in A (the behaviour before).
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 2 --resume_from_checkpoint A/checkpoint-4)
  expect_exists(A/args_resume.json)

elseif(CASE STREQUAL "resume_checkpoint_in_user_folder")
  # A checkpoint copied into a folder of the user's: the resumed run does not take that folder
  # (its logging.jsonl, images/ and loss.svg would replace the user's), it starts a run folder.
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir A)
  file(WRITE ${WORK_DIR}/mine/logging.jsonl "precious\n")
  file(WRITE ${WORK_DIR}/mine/images/train_loss.png "precious png\n")
  file(COPY ${WORK_DIR}/A/checkpoint-2 DESTINATION ${WORK_DIR}/mine)
  fingerprint(before mine)
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --resume_from_checkpoint mine/checkpoint-2)
  expect_output("mine is not the run folder .*checkpoint-2 came from")
  expect_unchanged("${before}" mine)
  expect_exists(output/checkpoint-4/adapter_model.safetensors output/resume_source.json)

elseif(CASE STREQUAL "resume_refused_writes_nothing")
  # Settings that differ are refused before anything is written for the resume: no
  # args_resume.json in place, no new version folder elsewhere.
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir A)
  fingerprint(before A)
  run(FAIL ${FT} ${ft_base} --max_steps 4 --save_steps 2 --learning_rate 1e-3 --resume_from_checkpoint A/checkpoint-2)
  expect_output("settings differ from the checkpoint's")
  expect_unchanged("${before}" A)
  run(FAIL ${FT} ${ft_base} --max_steps 4 --save_steps 2 --learning_rate 1e-3 --add_version true --output_dir B
      --resume_from_checkpoint A/checkpoint-2)
  expect_nothing_in(B)

elseif(CASE STREQUAL "resume_adapters_recorded_base")
  # --adapters without --model trains the base the adapter's run recorded (ms-swift's
  # load_args_from_ckpt), not the embedded default.
  run(OK ${FT} ${ft_base} --max_steps 2 --save_steps 2 --output_dir A)
  run(OK ${FT} --adapters A/checkpoint-2 --dataset ${TINY}/tokens.jsonl --max_steps 1 --add_version false
      --output_dir B)
  expect_output("base model .*tiny_public/model \\(recorded in .*A/checkpoint-2/args.json\\)")
  expect_output("\\[model\\] .*tiny_public/model: 2 layers")

elseif(CASE STREQUAL "resume_settings_mismatch")
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir A)
  fingerprint(a_before A)
  run(FAIL ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir A --resume_from_checkpoint A/checkpoint-2
      --learning_rate 5e-3 --lora_rank 4)
  expect_output("settings differ from the checkpoint's.*learning_rate: recorded 0.0001, now 0.005.*lora_rank: recorded 8, now 4.*--ignore_args_mismatch true")
  run(FAIL ${FT} --model ${TINY}/model --dataset "${TINY}/tokens.jsonl#5" --add_version false --logging_steps 1
      --max_steps 4 --save_steps 2 --resume_from_checkpoint A/checkpoint-2)
  expect_output("dataset_fingerprint: recorded \"[0-9a-f]+\", now \"[0-9a-f]+\"")
  file(REMOVE ${WORK_DIR}/A/args_resume.json)  # written before the check; everything else untouched
  expect_unchanged("${a_before}" A)
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --resume_from_checkpoint A/checkpoint-2 --learning_rate 5e-3
      --ignore_args_mismatch true)
  expect_output("resuming although settings differ")

elseif(CASE STREQUAL "resume_damaged_state")
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir A)
  file(READ ${WORK_DIR}/A/checkpoint-2/peft_state.json state)
  string(JSON state SET "${state}" resume dropout_rng "\"12345 678 damaged\"")
  file(WRITE ${WORK_DIR}/A/checkpoint-2/peft_state.json "${state}")
  run(FAIL ${FT} ${ft_base} --max_steps 4 --save_steps 2 --resume_from_checkpoint A/checkpoint-2)
  expect_output("A/checkpoint-2/peft_state.json: field 'resume.dropout_rng' is not a random generator state")
  string(JSON state SET "${state}" resume interval_steps "\"three\"")
  file(WRITE ${WORK_DIR}/A/checkpoint-2/peft_state.json "${state}")
  run(FAIL ${FT} ${ft_base} --max_steps 4 --save_steps 2 --resume_from_checkpoint A/checkpoint-2)
  expect_output("A/checkpoint-2/peft_state.json: field 'resume.interval_steps'")
  # Without peft_state.json the checkpoint cannot resume exactly, and says so.
  file(REMOVE ${WORK_DIR}/A/checkpoint-2/peft_state.json)
  run(FAIL ${FT} ${ft_base} --max_steps 4 --save_steps 2 --resume_from_checkpoint A/checkpoint-2)
  expect_output("A/checkpoint-2/trainer_state.json: no peft_state.json beside it")

elseif(CASE STREQUAL "resume_before_state_split")
  # A checkpoint of peft before peft_state.json held all of it in trainer_state.json: it resumes, and
  # the resumed run's step-4 adapter is the uninterrupted run's, bit for bit.
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --output_dir A)
  file(SHA256 ${WORK_DIR}/A/checkpoint-4/adapter_model.safetensors straight)
  file(READ ${WORK_DIR}/A/checkpoint-2/trainer_state.json old)
  file(READ ${WORK_DIR}/A/checkpoint-2/peft_state.json own)
  string(JSON n LENGTH "${own}")
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    string(JSON key MEMBER "${own}" ${i})
    string(JSON type TYPE "${own}" ${key})
    string(JSON value GET "${own}" ${key})
    if(type STREQUAL "STRING")
      set(value "\"${value}\"")
    endif()
    string(JSON old SET "${old}" ${key} "${value}")
  endforeach()
  file(WRITE ${WORK_DIR}/A/checkpoint-2/trainer_state.json "${old}")
  file(REMOVE ${WORK_DIR}/A/checkpoint-2/peft_state.json)
  run(OK ${FT} ${ft_base} --max_steps 4 --save_steps 2 --resume_from_checkpoint A/checkpoint-2)
  file(SHA256 ${WORK_DIR}/A/checkpoint-4/adapter_model.safetensors resumed)
  if(NOT resumed STREQUAL straight)
    message(FATAL_ERROR "the resumed run's checkpoint-4 adapter differs from the uninterrupted run's")
  endif()
  expect_exists(A/checkpoint-4/peft_state.json)

elseif(CASE STREQUAL "resume_cleans_staging")
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 2 --output_dir A)
  # What killed saves leave: staging folders and files, a previous checkpoint moved aside (its
  # new version published, or not), beside a user's file whose name only looks similar.
  file(WRITE ${WORK_DIR}/A/checkpoint-8.tmp-0123456789ab/adapter_model.safetensors "partial")
  file(WRITE ${WORK_DIR}/A/logging.jsonl.tmp-00000000beef "partial")
  file(COPY ${WORK_DIR}/A/checkpoint-4/ DESTINATION ${WORK_DIR}/A/checkpoint-4.old-aaaaaaaaaaaa)
  file(RENAME ${WORK_DIR}/A/checkpoint-6 ${WORK_DIR}/A/checkpoint-6.old-bbbbbbbbbbbb)
  file(WRITE ${WORK_DIR}/A/notes.tmp-mine "the user's")
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 2 --resume_from_checkpoint A/checkpoint-2)
  expect_output("restored .*A/checkpoint-6 from")
  expect_missing(A/checkpoint-8.tmp-0123456789ab A/logging.jsonl.tmp-00000000beef A/checkpoint-4.old-aaaaaaaaaaaa
                 A/checkpoint-6.old-bbbbbbbbbbbb)
  expect_exists(A/notes.tmp-mine A/checkpoint-4/adapter_model.safetensors A/checkpoint-6/adapter_model.safetensors)

elseif(CASE MATCHES "^signal_(sigint|sigterm)_saves$")
  set(sig ${CMAKE_MATCH_1})
  if(sig STREQUAL "sigint")
    set(code 130)
    set(name SIGINT)
  else()
    set(code 143)
    set(name SIGTERM)
  endif()
  run(${code} ${CMAKE_COMMAND} -E env PEFT_DEBUG_FAULT=${sig} ${FT} ${ft_base} --max_steps 6 --save_steps 100
      --output_dir out --debug_sigkill_at_step 3)
  expect_output("${name} received: stopping after step 3 with a checkpoint")
  expect_output("stopped by ${name}; continue with --resume_from_checkpoint .*out/checkpoint-3")
  expect_exists(out/checkpoint-3/adapter_model.safetensors out/checkpoint-3/optimizer.safetensors)
  expect_missing(out/run.lock)
  run(OK ${FT} ${ft_base} --max_steps 6 --save_steps 100 --output_dir out --resume_from_checkpoint out/checkpoint-3)
  expect_exists(out/checkpoint-6/adapter_model.safetensors)

elseif(CASE STREQUAL "log_disk_full")
  if(NOT EXISTS /dev/full)
    message(FATAL_ERROR "/dev/full is needed to simulate a full disk")
  endif()
  file(MAKE_DIRECTORY ${WORK_DIR}/out)
  file(CREATE_LINK /dev/full ${WORK_DIR}/out/logging.jsonl SYMBOLIC)
  run(FAIL ${FT} ${ft_base} --max_steps 2 --output_dir out --overwrite true)
  expect_output("out/logging.jsonl: write failed \\(disk full\\?\\)")

elseif(CASE STREQUAL "sweep_other_settings")
  set(sweep ${SWEEP} --model ${TINY}/model --learning_rates 1e-3 --epochs 1 --logging_steps 4)
  run(OK ${sweep} --dataset ${TINY}/tokens.jsonl --output_dir sw)
  fingerprint(before sw)
  run(FAIL ${sweep} --dataset ${TINY}/tokens.jsonl --lora_rank 16 --output_dir sw)
  expect_output("--output_dir sw holds cells trained with other settings.*lr0.001_ep1: .*lora_rank: recorded 8, now 16")
  run(FAIL ${sweep} --dataset "${TINY}/tokens.jsonl#6" --output_dir sw)
  expect_output("lr0.001_ep1: dataset_fingerprint: recorded")
  expect_unchanged("${before}" sw)
  run(OK ${sweep} --dataset ${TINY}/tokens.jsonl --output_dir sw)
  expect_output("lr 0.001 epochs 1: finished earlier with the same settings, skipped")
  run(OK ${sweep} --dataset "${TINY}/tokens.jsonl#6" --output_dir sw6)
  expect_exists(sw6/lr0.001_ep1/result.json sw6/lr0.001_ep1/cell_settings.json)

else()
  message(FATAL_ERROR "unknown case ${CASE}")
endif()
message(STATUS "${CASE}: passed")

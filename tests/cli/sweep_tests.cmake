# lr_epoch_sweep on a reduced grid (2 lr x 2 epoch counts, 16 identity rows of the embedded
# default): every cell trains with the evaluation hooks, the table and the plots appear, and a
# second invocation skips the finished cells instead of training them again; a grid's last cell
# equals the same cell run alone (cells share the loaded model). This file both
# registers the tests (included from tests/CMakeLists.txt) and runs the grid test (cmake -P).
if(NOT CMAKE_SCRIPT_MODE_FILE)
  add_test(NAME cli_sweep_reduced_grid_and_rerun
    COMMAND ${CMAKE_COMMAND} -DSWEEP=$<TARGET_FILE:lr_epoch_sweep> -DDATA=${PROJECT_SOURCE_DIR}/assets/data
            -DWORK=${CMAKE_CURRENT_BINARY_DIR}/cli_work/sweep -P ${CMAKE_CURRENT_LIST_FILE})
  add_test(NAME cli_sweep_bad_grid COMMAND ${CMAKE_COMMAND} -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/cli_work/sweep_bad
    "-DCMD=$<TARGET_FILE:lr_epoch_sweep>|--learning_rates|1e-3|fast" -DEXPECT_FAIL=ON
    "-DEXPECT_REGEX=--learning_rates: 'fast' is not a positive number" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_expect.cmake)
  return()
endif()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
include(${CMAKE_CURRENT_LIST_DIR}/run_checked.cmake)
function(run_sweep var)
  if(NOT ARGN)
    set(ARGN --learning_rates 3e-3 1e-3 --epochs 1 2 --output_dir sweep)
  endif()
  run_checked(out ${CMAKE_COMMAND} -E chdir ${WORK} ${SWEEP} --dataset "${DATA}/self_cognition.jsonl#16" ${ARGN}
              --model_name 小派 "Xiao Pai" --model_author "peft 社区" "the peft community"
              --eval_identity_dataset ${DATA}/identity_eval.jsonl --eval_general_dataset ${DATA}/general_eval.jsonl
              --eval_generation_max_new_tokens 16)
  set(${var} "${out}" PARENT_SCOPE)
endfunction()

run_sweep(first)
# A full row: lr, epochs, steps (2 epochs x 15 samples), train loss, eval loss, identity %, repetition, retention.
if(NOT first MATCHES "\\| 0.003 \\| 2 \\| 30 \\| [0-9.]+ \\| [0-9.]+ \\| [0-9]+% \\| [0-9.]+ \\| [0-9.]+ \\|")
  message(FATAL_ERROR "no complete table row for lr 3e-3 x 2 epochs:\n${first}")
endif()
foreach(f sweep.md sweep.csv sweep.svg lr0.001_ep2/loss.svg lr0.003_ep1/result.json lr0.003_ep2/logging.jsonl)
  if(NOT EXISTS ${WORK}/sweep/${f})
    message(FATAL_ERROR "sweep/${f} is missing:\n${first}")
  endif()
endforeach()
file(STRINGS ${WORK}/sweep/sweep.csv rows)
list(LENGTH rows n)
if(NOT n EQUAL 5)
  message(FATAL_ERROR "sweep.csv should have a header and 4 rows, has ${n} lines")
endif()

run_sweep(second)
string(REGEX MATCHALL "finished earlier with the same settings, skipped" skipped "${second}")
list(LENGTH skipped n)
if(NOT n EQUAL 4 OR second MATCHES "-> sweep/")
  message(FATAL_ERROR "the second run should skip all 4 finished cells:\n${second}")
endif()
# Cells share one loaded model and re-draw its adapters: the last cell of the grid must train
# exactly as the same cell alone (nothing of the cells before it may leak into it).
run_sweep(alone --learning_rates 1e-3 --epochs 2 --output_dir alone)
file(READ ${WORK}/sweep/lr0.001_ep2/result.json in_grid)
file(READ ${WORK}/alone/lr0.001_ep2/result.json by_itself)
foreach(key train_loss eval_loss identity_accuracy steps)
  string(JSON a GET "${in_grid}" ${key})
  string(JSON b GET "${by_itself}" ${key})
  if(NOT a STREQUAL b)
    message(FATAL_ERROR "lr 1e-3 x 2 epochs: ${key} is ${a} in the grid but ${b} alone")
  endif()
endforeach()
message(STATUS "4 cells trained, then all 4 skipped; the last cell equals the same cell alone")

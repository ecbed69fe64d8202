# Data-parallel identity_finetune from the command line (docs/multi_gpu.md): the launch variables'
# errors, and faults - a rank that dies or hangs must end the whole run with a non-zero exit and a
# message naming the rank, within a bounded time (the ctest TIMEOUTs below are that bound; the
# hang is detected after PEFT_DIST_TIMEOUT=2 s). Parity and resume across world sizes compare
# floats, so they are a C++ test (tests/test_dist_cli.cpp), which needs the program built.
set(PEFT_DIST_TINY --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false)
set(PEFT_DIST_BASE ${PEFT_DIST_TINY} --max_steps 6 --logging_steps 1 --save_steps 100 --output_dir out)

peft_cli_test(dist_two_ranks_train ENV NPROC_PER_NODE=2 MASTER_PORT=0
  ARGS ${PEFT_DIST_BASE} --gradient_accumulation_steps 2
  REGEX "launching 2 workers.*\\[dist\\] rank [01]/2.*tcp transport"
  FILES out/checkpoint-6/adapter_model.safetensors out/logging.jsonl)
peft_cli_test(dist_rank_dies ENV NPROC_PER_NODE=2 MASTER_PORT=0 PEFT_DEBUG_FAULT_RANK=1 FAIL
  ARGS ${PEFT_DIST_BASE} --debug_sigkill_at_step 2
  REGEX "rank 1 \\(pid [0-9]+\\) died by signal 9.*the run failed: rank 1 died by signal 9")
peft_cli_test(dist_rank_hangs ENV NPROC_PER_NODE=2 MASTER_PORT=0 PEFT_DEBUG_FAULT_RANK=1 PEFT_DEBUG_FAULT=hang
  PEFT_DIST_TIMEOUT=2 FAIL
  ARGS ${PEFT_DIST_BASE} --debug_sigkill_at_step 2
  REGEX "all-reduce: timed out waiting for rank 1.*rank 0 \\(pid [0-9]+\\) exited with status 1")
set_tests_properties(cli_dist_rank_dies cli_dist_rank_hangs cli_dist_two_ranks_train PROPERTIES TIMEOUT 30)

peft_cli_test(dist_bad_node_rank ENV NNODES=2 NODE_RANK=2 MASTER_ADDR=127.0.0.1 FAIL ARGS ${PEFT_DIST_TINY}
  REGEX "NODE_RANK=2 with NNODES=2")
peft_cli_test(dist_world_size_mismatch ENV RANK=0 WORLD_SIZE=3 NPROC_PER_NODE=2 FAIL ARGS ${PEFT_DIST_TINY}
  REGEX "WORLD_SIZE=3 but NPROC_PER_NODE x NNODES")
peft_cli_test(dist_nccl_on_cpu ENV RANK=0 WORLD_SIZE=1 PEFT_DIST_BACKEND=nccl FAIL ARGS ${PEFT_DIST_TINY}
  REGEX "NCCL sums GPU buffers")

# The program-level C++ test runs identity_finetune: build it first.
if(TARGET test_dist_cli)
  add_dependencies(test_dist_cli identity_finetune)
endif()

# --gradient_checkpointing (ms-swift's flag, default true) is a real flag now: it picks the CUDA
# programs' activation policy (docs/cuda_backend.md, "Memory"). The CPU program takes it, says it
# keeps every activation there (also for our third value, selective), and refuses any other value,
# naming the flag.
set(PEFT_GC_BASE --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false)
peft_cli_test(gradient_checkpointing_on_cpu
  ARGS ${PEFT_GC_BASE} --max_steps 1 --output_dir out --gradient_checkpointing false
  REGEX "--gradient_checkpointing chooses the GPU's activation policy. the CPU backend keeps every activation")
peft_cli_test(gradient_checkpointing_selective_on_cpu
  ARGS ${PEFT_GC_BASE} --max_steps 1 --output_dir out --gradient_checkpointing selective
  REGEX "--gradient_checkpointing chooses the GPU's activation policy. the CPU backend keeps every activation")
peft_cli_test(gradient_checkpointing_bad_value FAIL
  ARGS ${PEFT_GC_BASE} --gradient_checkpointing sometimes
  REGEX "--gradient_checkpointing: 'sometimes' is not supported .valid: true, false, selective.")

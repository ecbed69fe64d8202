# --gradient_checkpointing (ms-swift's flag, default true there; ours defaults to auto, the fastest
# plan that fits) picks the CUDA programs' activation policy (docs/cuda_backend.md, "Memory"). The
# CPU program takes it, says it keeps every activation there (also for our values selective and
# auto), and refuses any other value, naming the flag.
set(PEFT_GC_BASE --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false)
peft_cli_test(gradient_checkpointing_on_cpu
  ARGS ${PEFT_GC_BASE} --max_steps 1 --output_dir out --gradient_checkpointing false
  REGEX "--gradient_checkpointing chooses the GPU's activation policy. the CPU backend keeps every activation")
peft_cli_test(gradient_checkpointing_selective_on_cpu
  ARGS ${PEFT_GC_BASE} --max_steps 1 --output_dir out --gradient_checkpointing selective
  REGEX "--gradient_checkpointing chooses the GPU's activation policy. the CPU backend keeps every activation")
peft_cli_test(gradient_checkpointing_bad_value FAIL
  ARGS ${PEFT_GC_BASE} --gradient_checkpointing sometimes
  REGEX "--gradient_checkpointing: 'sometimes' is not supported .valid: auto, true, false, selective.")
# --recompute_num_layers (Megatron-SWIFT's, block method): the first N layers rebuild on the GPU, the
# rest keep everything. The CPU program takes it with the same note; it is refused with
# --gradient_checkpointing false (nothing is rebuilt there) and outside 0 to the model's layer count,
# naming the config that says how many layers there are.
peft_cli_test(recompute_num_layers_on_cpu
  ARGS ${PEFT_GC_BASE} --max_steps 1 --output_dir out --gradient_checkpointing selective --recompute_num_layers 1
  REGEX "--recompute_num_layers chooses the GPU's activation policy. the CPU backend keeps every activation"
  FILES out/args.json)
# args.json records the policy (the GPU programs write the one that ran) and the layer count.
peft_expect_file(recompute_num_layers_args_json recompute_num_layers_on_cpu out/args.json
  "\"gradient_checkpointing\": \"selective\"|\"recompute_num_layers\": 1,")
# Given alone, --recompute_num_layers asks for recompute (Megatron-SWIFT's pairing), not auto.
peft_cli_test(recompute_num_layers_implies_true
  ARGS ${PEFT_GC_BASE} --max_steps 1 --output_dir out --recompute_num_layers 1
  FILES out/args.json)
peft_expect_file(recompute_num_layers_alone_args_json recompute_num_layers_implies_true out/args.json
  "\"gradient_checkpointing\": \"true\"|\"recompute_num_layers\": 1,")
peft_cli_test(recompute_num_layers_with_auto FAIL
  ARGS ${PEFT_GC_BASE} --gradient_checkpointing auto --recompute_num_layers 1
  REGEX "--recompute_num_layers 1 with --gradient_checkpointing auto: the layers it rebuilds depend on the policy")
peft_cli_test(recompute_num_layers_with_keep FAIL
  ARGS ${PEFT_GC_BASE} --gradient_checkpointing false --recompute_num_layers 1
  REGEX "--recompute_num_layers 1 with --gradient_checkpointing false: every layer already keeps its activations")
peft_cli_test(recompute_num_layers_too_many FAIL
  ARGS ${PEFT_GC_BASE} --gradient_checkpointing selective --recompute_num_layers 3
  REGEX "--recompute_num_layers 3: .*tiny_public/model/config.json has 2 layers .0 to 2, or -1 for all of them.")
peft_cli_test(recompute_num_layers_negative FAIL
  ARGS ${PEFT_GC_BASE} --recompute_num_layers=-2
  REGEX "--recompute_num_layers -2: .* has 2 layers .0 to 2, or -1 for all of them.")

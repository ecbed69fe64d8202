# --optim (HF TrainingArguments' flag): adamw_torch (the default) or sgd (torch.optim.SGD, with
# --sgd_momentum); the optimizer's state goes into every checkpoint; any other name is refused by
# name before the model loads.
include(${CMAKE_CURRENT_LIST_DIR}/peft_cli_test.cmake)
set(O_BASE --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false --output_dir out)
peft_cli_test(optim_sgd ARGS ${O_BASE} --optim sgd --sgd_momentum 0.9 --learning_rate 0.01 --max_steps 2 --save_steps 2
  REGEX "optim sgd" FILES out/checkpoint-2/optimizer.safetensors out/checkpoint-2/adapter_model.safetensors)
peft_cli_test(optim_unknown FAIL ARGS ${O_BASE} --optim adafactor
  REGEX "--optim adafactor: not available here \\(valid: adamw_torch, sgd\\)")

# The recipe's two `swift sft` commands, flag for flag, on the embedded default (no --model), with
# --max_steps added at the end so CI stays fast. The second resolves the alpaca-gpt4 dataset ids
# under PEFT_DATA_HOME (a small alpaca-format set written for these tests) and samples 500 rows
# from each, repeating rows as ms-swift does when a file is smaller.
set(PEFT_RECIPE_FLAGS --torch_dtype bfloat16 --per_device_train_batch_size 1 --learning_rate 1e-4
    --lora_rank 8 --lora_alpha 32 --target_modules all-linear --gradient_accumulation_steps 16
    --eval_steps 50 --save_steps 50 --save_total_limit 2 --logging_steps 5 --max_length 2048
    --output_dir output --system "You are a helpful assistant." --warmup_ratio 0.05
    --model_author swift --model_name swift-robot)
peft_cli_test(recipe_identity SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/copy_self_cognition.cmake
  ARGS --train_type lora --dataset self_cognition.json --num_train_epochs 10 ${PEFT_RECIPE_FLAGS} --max_steps 3
  REGEX "88 train samples.*swift-robot|swift-robot.*88 train samples|dataset 'self_cognition.json': 88 rows")
peft_cli_test(recipe_mixed SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/copy_self_cognition.cmake
  ENV PEFT_DATA_HOME=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/data_home
  ARGS --train_type lora --dataset "AI-ModelScope/alpaca-gpt4-data-zh#500" "AI-ModelScope/alpaca-gpt4-data-en#500"
       self_cognition.json --num_train_epochs 3 ${PEFT_RECIPE_FLAGS} --max_steps 2
  REGEX "alpaca-gpt4-data-zh#500': 6 rows read from 1 file -> 500 train.*alpaca-gpt4-data-en#500': 6 rows read from 1 file -> 500 train.*1088 train samples")
peft_cli_test(recipe_dataset_id_missing FAIL ARGS --dataset "AI-ModelScope/alpaca-gpt4-data-zh#500" --max_steps 1
  ENV PEFT_DATA_HOME=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets
  REGEX "AI-ModelScope/alpaca-gpt4-data-zh.*fixtures/datasets")

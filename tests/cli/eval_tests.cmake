# Evaluation hooks, early stopping and the numerical guard as a user meets them through
# identity_finetune.
# run_expect matches stdout followed by stderr, hence the order inside the regexes.
set(tiny --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false --output_dir out
    --gradient_accumulation_steps 1)
# The embedded default: identity accuracy and repetition from greedy answers to
# assets/data/identity_eval.jsonl, retention on assets/data/general_eval.jsonl, and the plot.
peft_cli_test(eval_hooks_embedded_default
  ARGS --add_version false --output_dir out --max_steps 6 --eval_steps 3 --save_steps 3 --logging_steps 1
       --metric_for_best_model identity_accuracy --load_best_model_at_end true
  REGEX "eval_general_retention.*eval_identity_accuracy.*eval_repetition.*best checkpoint: out/checkpoint-3"
  FILES out/loss.svg out/checkpoint-6/trainer_state.json out/checkpoint-6/peft_state.json
        out/checkpoint-3/adapter_model.safetensors)
peft_cli_test(early_stopping
  ARGS ${tiny} --split_dataset_ratio 0.25 --learning_rate 5e-2 --lr_scheduler_type constant --num_train_epochs 20
       --eval_steps 2 --save_steps 2 --save_total_limit 1 --early_stop_patience 2 --load_best_model_at_end true
  REGEX "early stopping at step.*\\(stopped early\\).*best checkpoint: out/checkpoint-[0-9]+ \\(eval_loss = "
  FILES out/loss.svg)
peft_cli_test(nonfinite_steps_stop_the_run FAIL
  ARGS ${tiny} --learning_rate 1e30 --lr_scheduler_type constant --max_steps 30 --max_consecutive_nonfinite_steps 4
  REGEX "update skipped.*training diverged: 4 optimizer steps in a row")
peft_cli_test(best_metric_not_produced FAIL
  ARGS ${tiny} --split_dataset_ratio 0.25 --max_steps 2 --save_steps 1 --metric_for_best_model identity_accuracy
  REGEX "--metric_for_best_model identity_accuracy: this run makes no evaluation that produces 'eval_identity_accuracy'")
peft_cli_test(load_best_needs_aligned_saves FAIL
  ARGS ${tiny} --load_best_model_at_end true --eval_steps 3 --save_steps 5 REGEX "multiple of --eval_steps \\(3\\)")

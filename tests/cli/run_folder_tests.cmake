# What identity_finetune leaves to look at: images/*.png beside loss.svg, and with --report_to
# tensorboard the event files under runs/ (their content: tests/test_run_plots.cpp).
peft_cli_test(run_folder_images_and_tensorboard
  ARGS --max_steps 3 --logging_steps 1 --output_dir out --add_version false --report_to tensorboard
  REGEX "tensorboard events: out/runs"
  FILES out/loss.svg out/images/train_loss.png out/images/train_learning_rate.png out/images/train_grad_norm.png
        out/images/eval_identity_accuracy.png out/runs)
peft_cli_test(run_folder_report_to_none ARGS --max_steps 1 --output_dir out --add_version false --report_to none
  FILES out/images/train_loss.png)
peft_cli_test(run_folder_report_to_unknown FAIL ARGS --max_steps 1 --report_to wandb
  REGEX "--report_to wandb: not available here \\(valid: tensorboard, all, none\\)")

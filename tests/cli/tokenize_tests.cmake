# The tokenize filter as a pipeline uses it: ids for text, text for ids (ids without a token
# skipped, as HF's decode does), and a malformed line or an unreadable tokenizer stops it with the line or file named and a non-zero exit.
include(${CMAKE_CURRENT_SOURCE_DIR}/cli/program_test.cmake)
set(PEFT_TOKENIZER_JSON ${PROJECT_SOURCE_DIR}/assets/tokenizer/qwen2.5/tokenizer.json)
peft_program_test(tokenize tokenize_encode ARGS --tokenizer ${PEFT_TOKENIZER_JSON}
  INPUT "\"Hello world\"" "\"你好\\n世界 123\""
  REGEX "^\\[9707,1879\\]\n\\[108386,198,99489,220,16,17,18\\]\n$")
peft_program_test(tokenize tokenize_decode ARGS --tokenizer ${PEFT_TOKENIZER_JSON} --decode
  INPUT "[9707,1879]" "[108386,198,99489,220,16,17,18]"
  REGEX "^\"Hello world\"\n\"你好\\\\n世界 123\"\n$")
peft_program_test(tokenize tokenize_malformed_line FAIL ARGS --tokenizer ${PEFT_TOKENIZER_JSON}
  INPUT "\"fine\"" "not json" REGEX "line 2")
# As HF's decode: ids without a token (151719 is in Qwen2.5's padded embedding rows) are skipped;
# a negative id is no id and stops the filter.
peft_program_test(tokenize tokenize_decode_skips_unknown_ids ARGS --tokenizer ${PEFT_TOKENIZER_JSON} --decode
  INPUT "[9707,151719,1879,999999]" REGEX "^\"Hello world\"\n$")
peft_program_test(tokenize tokenize_negative_id FAIL ARGS --tokenizer ${PEFT_TOKENIZER_JSON} --decode
  INPUT "[1]" "[1,-3]" REGEX "line 2.*token id -3 is negative")
peft_program_test(tokenize tokenize_missing_tokenizer FAIL ARGS --tokenizer nowhere/tokenizer.json
  INPUT "\"x\"" REGEX "nowhere/tokenizer.json")
peft_program_test(tokenize tokenize_truncated_tokenizer FAIL ARGS --tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/bad/tokenizer_truncated.json
  INPUT "\"x\"" REGEX "tokenizer_truncated.json")
peft_program_test(tokenize tokenize_not_bpe FAIL ARGS --tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/bad/tokenizer_wordpiece.json
  INPUT "\"x\"" REGEX "tokenizer_wordpiece.json.*(BPE|WordPiece)")

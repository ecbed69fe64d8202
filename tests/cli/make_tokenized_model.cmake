# SETUP for tests that need a model folder laid out as a Hugging Face checkpoint with its
# tokenizer: the tiny fixture's weights plus the Qwen2.5 tokenizer fetched at set-up.
file(MAKE_DIRECTORY ${WORK_DIR}/model)
file(GLOB files ${FIXTURES}/tiny_public/model/*)
file(COPY ${files} DESTINATION ${WORK_DIR}/model)
file(COPY ${FIXTURES}/../../assets/tokenizer/qwen2.5/tokenizer.json DESTINATION ${WORK_DIR}/model)

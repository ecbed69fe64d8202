# SETUP: the user's self_cognition.json in the working folder, as the recipe expects it (the
# shipped identity set; its JSONL content is detected whatever the extension).
file(MAKE_DIRECTORY ${WORK_DIR})
file(COPY_FILE ${FIXTURES}/../../assets/data/self_cognition.jsonl ${WORK_DIR}/self_cognition.json)

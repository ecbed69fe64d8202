# An adapter whose training run names a base model folder that is not there (moved or deleted).
file(REMOVE_RECURSE ${WORK_DIR})
file(COPY ${FIXTURES}/tiny_public/adapter_trained/ DESTINATION ${WORK_DIR}/orphan)
file(WRITE ${WORK_DIR}/orphan/args.json "{\"model\": \"${WORK_DIR}/nowhere\"}\n")

# make_chat_models.cmake's ckpt/, its args.json also recording a val_dataset list (as ms-swift's
# args.json does), for chat --load_data_args true.
include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
file(WRITE ${WORK_DIR}/ckpt/args.json "{\"model\": \"${WORK_DIR}/tiny\", \"torch_dtype\": \"float32\", \
\"val_dataset\": [\"${FIXTURES}/datasets/query_response.jsonl\"]}\n")

# make_chat_models.cmake's ckpt/, its args.json recording two datasets and a 0.5 validation split
# with a data seed (as a run with --split_dataset_ratio records it), for chat --load_data_args true.
include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)
file(WRITE ${WORK_DIR}/ckpt/args.json "{\"model\": \"${WORK_DIR}/tiny\", \"torch_dtype\": \"float32\", \
\"dataset\": [\"${FIXTURES}/datasets/query_response.jsonl\", \"${FIXTURES}/datasets/query_response.jsonl\"], \
\"val_dataset\": [], \"split_dataset_ratio\": 0.5, \"data_seed\": 3, \"dataset_shuffle\": true}\n")

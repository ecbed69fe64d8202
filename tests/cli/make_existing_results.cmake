# A --result_path file from an earlier run: one JSONL line, its newline missing (as a file cut by
# hand can be), which chat must keep and append after.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/answers.jsonl "{\"query\":\"earlier\",\"response\":\"kept\"}")

# An output folder a user already has: out/model.gguf and out/notes.txt, which export must keep
# unless told --overwrite true.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/out)
file(WRITE ${WORK_DIR}/out/model.gguf "the user's own file\n")
file(WRITE ${WORK_DIR}/out/notes.txt "keep me\n")

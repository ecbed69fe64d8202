# cmake -DFILE=path -DEXPECT_REGEX=re -P expect_file.cmake: fails unless the file exists and
# matches every '|'-separated regex (a program's output file checked after the run that wrote it).
if(NOT EXISTS "${FILE}")
  message(FATAL_ERROR "${FILE} does not exist")
endif()
file(READ "${FILE}" content)
string(REPLACE "|" ";" regexes "${EXPECT_REGEX}")
foreach(re IN LISTS regexes)
  if(NOT content MATCHES "${re}")
    message(FATAL_ERROR "${FILE} does not match '${re}':\n${content}")
  endif()
endforeach()

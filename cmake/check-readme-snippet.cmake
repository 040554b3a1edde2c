# Fails when README.md no longer contains examples/quickstart.cpp verbatim,
# so the README's usage snippet is always code that compiles and runs.
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/examples/quickstart.cpp snippet)
string(FIND "${readme}" "${snippet}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "README.md's usage snippet differs from examples/quickstart.cpp")
endif()

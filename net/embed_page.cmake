# cmake -DINPUT=page.html -DOUTPUT=static_page.cpp -P embed_page.cmake
# Writes a C++ source defining ultraserve::static_page_html() as the file's bytes, in a raw
# string literal so that the HTML stays readable in the generated source.
file(READ "${INPUT}" content)
set(delimiter "ultraserve_page")
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )${delimiter}\"")
endif()
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by embed_page.cmake. Do not edit.\n"
  "#include \"net/static_page.h\"\n"
  "namespace ultraserve {\n"
  "std::string_view static_page_html() {\n"
  "  static constexpr char page[] = R\"${delimiter}(${content})${delimiter}\";\n"
  "  return {page, sizeof(page) - 1};\n"
  "}\n"
  "}  // namespace ultraserve\n")
# Only touch the output when it changed, so an unchanged page does not recompile anything.
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUTPUT}.tmp" "${OUTPUT}")
file(REMOVE "${OUTPUT}.tmp")

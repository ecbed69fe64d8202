# The library's dependencies, found the same way when building peft and when a consumer runs
# find_package(peft): Debian's packages ship CMake configs for Eigen, fmt and nlohmann-json;
# utf8proc, PCRE2 and cairo come through pkg-config, wrapped here as imported targets.
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(fmt)
find_dependency(nlohmann_json 3)
find_package(PkgConfig REQUIRED)
if(NOT TARGET peft::utf8proc)
  pkg_check_modules(PEFT_UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
  add_library(peft::utf8proc INTERFACE IMPORTED)
  target_link_libraries(peft::utf8proc INTERFACE PkgConfig::PEFT_UTF8PROC)
endif()
if(NOT TARGET peft::pcre2)
  pkg_check_modules(PEFT_PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
  add_library(peft::pcre2 INTERFACE IMPORTED)
  target_link_libraries(peft::pcre2 INTERFACE PkgConfig::PEFT_PCRE2)
endif()
# cairo draws the run folder's images/*.png (train/png_plot.hpp); PEFT_HAS_CAIRO tells the headers
# it is linked (a build without it, such as the static CUDA programs, writes loss.svg only).
if(NOT TARGET peft::cairo)
  pkg_check_modules(PEFT_CAIRO REQUIRED IMPORTED_TARGET cairo)
  add_library(peft::cairo INTERFACE IMPORTED)
  target_link_libraries(peft::cairo INTERFACE PkgConfig::PEFT_CAIRO)
  target_compile_definitions(peft::cairo INTERFACE PEFT_HAS_CAIRO=1)
endif()

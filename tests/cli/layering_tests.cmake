# The library's folders form layers (docs/design.md, "The layers of the library"): a header may
# include its own folder and the folders below it, never one above. A cycle between two folders
# is how "kernels" ends up including "models"; this test names the offending include.
add_test(NAME library_folders_include_only_lower_layers
         COMMAND ${CMAKE_COMMAND} -DROOT=${PROJECT_SOURCE_DIR}/include/peft
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_layering_check.cmake)

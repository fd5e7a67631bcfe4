# HeraldPlugin.cmake — build a Herald transport plugin, in this tree or out of it.
#
#   include(/path/to/herald/plugins/HeraldPlugin.cmake)
#   herald_add_transport(mytransport src/mytransport.c)
#
# produces mytransport.so (no "lib" prefix) in HERALD_PLUGIN_OUTPUT_DIR (default: the current
# binary dir), compiled against the public headers only, with libuv's include path. Point
# [plugins] dir in herald.conf at that directory and list the name in [plugins] load.
get_filename_component(_herald_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(HERALD_PUBLIC_INCLUDE_DIR "${_herald_root}/broker/include" CACHE PATH "Herald public headers")

function(herald_add_transport name)
  if(NOT TARGET PkgConfig::UV)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(UV REQUIRED IMPORTED_TARGET libuv)
  endif()
  set(target herald_transport_${name})
  add_library(${target} MODULE ${ARGN})
  target_include_directories(${target} PRIVATE ${HERALD_PUBLIC_INCLUDE_DIR})
  # Headers only: libuv symbols resolve against the daemon's copy at dlopen time.
  target_include_directories(${target} PRIVATE ${UV_INCLUDE_DIRS})
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME ${name} C_VISIBILITY_PRESET hidden)
  if(HERALD_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES
      LIBRARY_OUTPUT_DIRECTORY ${HERALD_PLUGIN_OUTPUT_DIR})
  endif()
endfunction()

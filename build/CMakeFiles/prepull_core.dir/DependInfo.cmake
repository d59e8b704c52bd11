
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/agent/error.c" "CMakeFiles/prepull_core.dir/agent/error.c.o" "gcc" "CMakeFiles/prepull_core.dir/agent/error.c.o.d"
  "/work/main/agent/log.c" "CMakeFiles/prepull_core.dir/agent/log.c.o" "gcc" "CMakeFiles/prepull_core.dir/agent/log.c.o.d"
  "/work/main/agent/util.c" "CMakeFiles/prepull_core.dir/agent/util.c.o" "gcc" "CMakeFiles/prepull_core.dir/agent/util.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")

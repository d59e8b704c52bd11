file(REMOVE_RECURSE
  "CMakeFiles/prepull_core.dir/agent/error.c.o"
  "CMakeFiles/prepull_core.dir/agent/error.c.o.d"
  "CMakeFiles/prepull_core.dir/agent/log.c.o"
  "CMakeFiles/prepull_core.dir/agent/log.c.o.d"
  "CMakeFiles/prepull_core.dir/agent/util.c.o"
  "CMakeFiles/prepull_core.dir/agent/util.c.o.d"
  "libprepull_core.a"
  "libprepull_core.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/prepull_core.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()

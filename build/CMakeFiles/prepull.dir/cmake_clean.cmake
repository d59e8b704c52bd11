file(REMOVE_RECURSE
  "CMakeFiles/prepull.dir/agent/main.c.o"
  "CMakeFiles/prepull.dir/agent/main.c.o.d"
  "prepull"
  "prepull.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/prepull.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()

file(REMOVE_RECURSE
  "libprepull_core.a"
)

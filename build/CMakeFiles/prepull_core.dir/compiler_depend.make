# Empty compiler generated dependencies file for prepull_core.
# This may be replaced when dependencies are built.

# Empty compiler generated dependencies file for prepull.
# This may be replaced when dependencies are built.

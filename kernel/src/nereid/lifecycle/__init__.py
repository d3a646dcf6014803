"""Models coming and going: loading a model version, the repository manager, stores."""

"""An example Nereid backend plugin: ``scale`` multiplies its input by a factor."""

"""Plugins the kernel ships, registered through the ``nereid`` entry-point group like any other."""

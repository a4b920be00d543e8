"""The benchmark project: one Django project serving every variant that the scripts compare."""

"""Running models: the integrator driver, virtual populations, executors."""

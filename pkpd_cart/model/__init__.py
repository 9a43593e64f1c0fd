"""Writing models: symbolic definitions, loading, documentation and diagrams."""

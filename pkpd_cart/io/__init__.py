"""Exchange formats (SBML)."""

"""Reports: parameter tables, figures, derived quantities, output files."""

"""Datasets: NONMEM-style records, validation and unit conversion."""

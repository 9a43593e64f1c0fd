"""Mechanism blocks: functions that add states, parameters and terms to a ModelBuilder."""

"""Estimation: likelihood pieces, fixed-effects and population fits, uncertainty."""

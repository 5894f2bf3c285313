"""Consumption and charges from cumulative registers (DESIGN.md §4)."""

"""Prepaid control: supply policy, device twin, commands (DESIGN.md §6)."""

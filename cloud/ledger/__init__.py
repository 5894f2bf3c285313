"""Double-entry ledger (DESIGN.md §5)."""

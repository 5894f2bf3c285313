"""Dunning (催费): arrears lists and notices (DESIGN §15)."""

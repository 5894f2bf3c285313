"""Meter simulators that serve profiles over the real protocols."""

"""Payments: counter sales now; WeChat Pay and reconciliation later (DESIGN.md §7)."""

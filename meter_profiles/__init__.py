"""Declarative meter models (profiles), their schema, and simulators that speak the real protocols.

Must not import cloud."""

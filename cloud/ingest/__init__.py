"""Ingest: telemetry and acks from gateways into readings, ratings and the ledger."""

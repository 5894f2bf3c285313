"""Reconciliation with WeChat Pay (DESIGN §14): ``bill`` reads a trade bill (pure),
``match`` compares it with our orders and refunds (pure), ``service`` fetches, checks,
stores and resolves (the database and WeChat), ``jobs`` is the worker's morning run."""

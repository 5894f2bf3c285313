"""Printed documents: receipts, price notices, reports (HTML templates rendered to PDF
with the CJK font embedded)."""

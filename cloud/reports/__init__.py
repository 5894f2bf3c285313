"""Finance reports (DESIGN §14, issue 18 item 4): queries over the ledger's postings, never
counters kept on the side, so every report ties out to the journal. One module per report;
``period`` and ``scope`` check what is asked, ``table`` is the shape the console renders,
prints and exports to Excel."""

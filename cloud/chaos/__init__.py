"""`prepay chaos`: seeded, replayable fault schedules over the real processes, and the
invariants checked after each (issue 20)."""

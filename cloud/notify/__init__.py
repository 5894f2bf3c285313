"""When to notify (DESIGN §8): the outbox rows cloud writes in each event's transaction
(:mod:`cloud.notify.outbox`) and the read side for the console (:mod:`cloud.notify.queries`).
Delivery is ``notifications/``'s."""

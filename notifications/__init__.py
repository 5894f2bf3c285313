"""Notification delivery (DESIGN §8): the worker that takes the outbox rows cloud wrote
(``cloud.notify.outbox``) and delivers them through providers (Twilio SMS, WeChat
subscribe messages, log), with templates in zh-CN and en, quiet hours, a per-customer
rate limit, retries with backoff and the providers' status callbacks. It never decides
*when* to notify: cloud does, in each event's own transaction."""

"""WeChat Pay API v3 for the tenant app (DESIGN §7): a property group's merchant settings,
payment orders, their notifications and queries, refunds. The client is ``wechatpayv3``;
what it does not check (the notification's timestamp, the deliberate signature probes, the
order's amount and merchant) is checked here."""

"""Local stand-ins of the providers' servers (Twilio, WeChat) that speak their wire
formats, for the tests, the benchmark and the demo (CONVENTIONS: stand-ins only for what
is outside this machine's reach)."""

"""The wire contract shared by the gateway agent and the cloud (topics and payloads)."""

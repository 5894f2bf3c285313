"""The edge gateway agent: polls meters on RS-485 buses and talks to the cloud over MQTT.

Must not import cloud."""

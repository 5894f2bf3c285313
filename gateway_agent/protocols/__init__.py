"""Pure codecs for the meter protocols the gateway speaks (DL/T 645, CJ/T 188, Modbus RTU)."""

"""Contract tests: golden payloads and the vendor SDK against the emulator."""

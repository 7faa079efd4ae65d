"""End-to-end tests: a real deployment stack on loopback."""

"""Real HTTP servers on loopback ports that speak each upstream protocol, for tests."""

"""State shared by every replica: Redis, or the embedded in-memory twin."""

"""The Anthropic-compatible HTTP service and the path of a request through it."""

"""Upstream wire protocols: pure translation between the Anthropic Messages API and each protocol."""

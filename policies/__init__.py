"""Decisions without I/O: catalog, resolution, provider preference, plans, retries and limits."""

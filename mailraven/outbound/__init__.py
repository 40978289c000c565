"""Outbound delivery: the durable queue, MX lookup, DKIM signing, DSNs."""

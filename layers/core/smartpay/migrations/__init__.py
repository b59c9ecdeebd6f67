"""Numbered SQL migrations shipped in the layer (applied by smartpay.migrate)."""

"""Webhook receipt: Buffr's signed voucher status events, verified, deduplicated and applied once."""

"""Disbursement: issue vouchers and send them to Buffr exactly once (single and whole-cycle batches)."""

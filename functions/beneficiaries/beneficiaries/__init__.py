"""Beneficiary lookup: Buffr verifies a beneficiary before it credits a wallet."""

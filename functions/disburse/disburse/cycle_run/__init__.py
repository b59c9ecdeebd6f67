"""Cycle runs: a programme cycle disbursed server-side (prepare → approve → SQS → consume)."""

"""Reconcile function: compares open vouchers with Buffr, heals or flags each difference."""

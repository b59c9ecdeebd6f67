"""Ketchup SmartPay shared core: everything the Lambda functions have in common.

Modules are small and imported lazily by the functions that need them, so a function's
cold start only pays for what it uses.
"""

"""The disburse function's use cases, one per module: issue, read, send (one voucher), batch."""

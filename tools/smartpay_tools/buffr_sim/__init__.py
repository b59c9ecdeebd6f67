"""A Buffr simulator on loopback: the partner's disburse/status API (:mod:`.server`) and the signed
webhooks it sends back (:mod:`.webhook_sender`), with fault knobs for tests and the demo.
"""

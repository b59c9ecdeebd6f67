"""Apply the layer's SQL migrations (invoke manually after a deploy)."""

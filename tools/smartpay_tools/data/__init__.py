"""Data tools: synthetic registry/payroll CSVs (:mod:`.datagen`) and their imports."""

"""The contracts that cross Temporal: what runs, activities, signals, updates, queries and reports
carry, as pydantic models, with the pure functions that name and hash them. The bottom layer:
it imports pydantic and the standard library (and `cryptography` to verify signatures), nothing of
Airlock's above it, so workflow code may import all of it."""

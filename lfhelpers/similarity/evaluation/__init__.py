"""How well retrieval works: precision by label, near-duplicates, same-item recall."""

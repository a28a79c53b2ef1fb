"""Per-photo features: texture, colour, CNN embeddings and local keypoints, with one cache."""

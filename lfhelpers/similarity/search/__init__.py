"""Search: the one gallery index, its post-processing, and same-item verification."""

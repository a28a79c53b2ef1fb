"""Search: the one gallery index, its scaling steps, and same-item verification."""

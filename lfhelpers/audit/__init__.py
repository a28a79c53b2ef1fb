"""The data-quality audit of a clean set: bad photos and doubtful labels, ranked for review.

report   ``audit_dataset``: quality flags, cross-class duplicates and label issues -> ``audit.csv``
labels   label issues by confident learning on CNN embeddings (uses the similarity stage)

A stage of its own above ``data`` and ``similarity``: only the notebooks, the CLI and the
explorer use it. Corrections it suggests are applied by the next ``clean``
(:mod:`lfhelpers.data.corrections`).
"""

"""Class balancing by augmentation of the train split (notebook 02).

balance    the tutorial's transforms (OpenCV, seeded per image) and as Keras layers, the balance
           plan, writing the augmented set with its own manifest, and reading it back
"""

from lfhelpers.augment.balance import *  # noqa: F403 - the stage's public API

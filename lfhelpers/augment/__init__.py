"""Class balancing by augmentation of the train split (notebook 02).

transforms  the tutorial's random transforms (OpenCV, seeded per image) and as Keras layers,
            and per-class choices (``no_flip_classes``)
write       writing augmented copies of originals, in parallel, with manifest rows
balance     the balance plan and :func:`balance_train`, resumable, with its own manifest
output      reading an augmented folder back, checking its origins, the comparison grid
"""

from lfhelpers.augment.balance import (
    RECORD,
    WARN_COPIES,
    AugmentResult,
    BalancePlan,
    balance_train,
    default_aug_dir,
    plan_balance,
    resolve_target,
)
from lfhelpers.augment.output import (
    comparison_grid,
    origin_splits,
    read_augmented,
    train_with_augmented,
)
from lfhelpers.augment.transforms import (
    AugmentParams,
    augment_array,
    image_rng,
    keras_augmentation,
    params_by_class,
    random_transform,
)
from lfhelpers.augment.write import AUG_COLUMNS, augment_sources

__all__ = [
    "AUG_COLUMNS", "RECORD", "WARN_COPIES", "AugmentParams", "AugmentResult", "BalancePlan",
    "augment_array", "augment_sources", "balance_train", "comparison_grid", "default_aug_dir",
    "image_rng", "keras_augmentation", "origin_splits", "params_by_class", "plan_balance",
    "random_transform", "read_augmented", "resolve_target", "train_with_augmented",
]

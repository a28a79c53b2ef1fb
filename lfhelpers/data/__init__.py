"""The data layer: from a source to a clean, split, labelled image set.

manifest   the manifest schema: read, write, count (``manifest.csv``); tell a foreign one;
           list the photos of a clean set or of class sub-folders
prepare    obtain raw class folders, clean and split them (the orchestration)
sources    the public data sets: registry, checked resumable downloads, offline mirror
clean      the cleanup run: folder walk, per-file cache, corrections, clean set, quarantine
checks     the checks of one raw file (through the one image loader): size limits, decode
duplicates exact and near duplicates, label conflicts, the groups the split keeps together
split      seeded stratified train/val/test split keeping near-duplicates together
sampling   per-class samples and the gallery/queries split
fixtures   a drawn synthetic data set with every awkward kind of file (tests, smoke runs)
"""

from lfhelpers.data.manifest import (
    MANIFEST,
    MANIFEST_COLUMNS,
    SPLITS,
    class_counts,
    is_project_manifest,
    list_photos,
    manifest_path,
    project_manifest,
    read_manifest,
    write_manifest,
)
from lfhelpers.data.prepare import ensure_manifest, folder_counts, obtain_raw, prepare_dataset
from lfhelpers.data.sampling import gallery_and_queries, sample_per_class, spread_sample

__all__ = ["MANIFEST", "MANIFEST_COLUMNS", "SPLITS", "class_counts",
           "ensure_manifest", "folder_counts", "gallery_and_queries", "is_project_manifest",
           "list_photos", "manifest_path", "obtain_raw", "prepare_dataset",
           "project_manifest", "read_manifest", "sample_per_class", "spread_sample",
           "write_manifest"]

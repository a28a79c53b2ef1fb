"""Lost & Found image workbook helpers.

The folders follow the pipeline; every stage depends only on the shared layer below it.

Stages
------
data        raw data to a clean, split, labelled set: sources, cleanup, split, manifest, samples
crawl       crawling a listing site into class folders
augment     class balancing by augmentation of the train split
models      the Xception category classifier: training, evaluation, ``predict``
color       color names and the dominant colors of item photos
similarity  haralick texture, CNN embeddings, nearest-neighbour search, matcher, clusters

Shared layer
------------
images      the one image loader and the one resize used by every model
plots       matplotlib helpers (CJK fonts, bar charts, image grids)
pipeline    the papermill runner of the numbered notebooks (profiles in ``profiles.yaml``)
paths       the project folder that relative paths refer to
metrics     ``metrics.json`` of a run
fsutil      atomic writes and content hashes
http        the one HTTP retry policy (requests + urllib3 Retry), for downloads and the crawler
errors      the exception types a user can act on
cli         ``python -m lfhelpers <verb>``
"""

import os as _os

# TensorFlow's C++ start-up messages (CUDA probing on a CPU machine, oneDNN notices, absl's
# pre-init warning) are noise for the analyst: keep only fatal ones unless the user chose a
# level. Must happen before TensorFlow is first imported, which is always after this package.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

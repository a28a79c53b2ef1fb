"""Lost & Found image workbook helpers.

The folders follow the pipeline; each is a layer that uses only the layers listed above it
(checked by ``tests/test_architecture.py``).

Shared base
-----------
images      the one image loader and the one resize used by every model
plots       matplotlib helpers (CJK fonts, bar charts, image grids)
paths       the project folder that relative paths refer to
metrics     ``metrics.json`` of a run
fsutil      atomic writes and content hashes
store       the one content-addressed store of per-photo results (trunk activations,
            embeddings, hand-made and local features, palettes)
http        the one HTTP retry policy (requests + urllib3 Retry), for downloads and the crawler
errors      the exception types a user can act on

Layers
------
pipeline    the generic papermill runner of the numbered notebooks (profiles in
            ``profiles.yaml``, the notebook graph in ``graph.yaml``); it imports no stage
data        raw data to a clean, split, labelled set: sources, cleanup, split, manifest, samples
crawl       crawling a listing site into class folders
augment     class balancing by augmentation of the train split
color       color names and the dominant colors of item photos
models      the Xception category classifier: training, evaluation, ``predict``
similarity  features, the one search engine (recipe, index, same-item verification), its
            evaluation, the matcher, clusters, batch embedding on Dask
audit       photo-quality flags and label issues of a clean set
explore     the interactive explorer of notebook 07
cli         ``python -m lfhelpers <verb>``
"""

__version__ = "0.1.0"

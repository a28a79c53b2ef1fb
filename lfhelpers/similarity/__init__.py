"""Similar images: haralick texture, CNN embeddings, nearest-neighbour search, matching, clusters.

texture          haralick texture features (a scikit-learn transformer) and their presets
color_features   color histograms (the book's chist and CIELAB), texture + color as one union
image_features   the shared base: parallel, cached, Dask-capable extraction; CombinedFeatures
texture_eval     the tutorial's classifier, its evaluation, feature-set comparisons and speed
texture_search   the gallery index for texture (and color) similarity, its tables and figures
embeddings       CNN embeddings of photos from any Keras application or the fine-tuned classifier
extractors       which extractor a data set gets (a classifier only when its labels fit)
shards           embeddings as Parquet shards (``embed``), resumable, on Dask workers
distributed      a Dask client from ``local``, ``local:N`` or ``tcp://host:8786``
commands         the ``embed``, ``index`` and ``search`` commands
index            the one nearest-neighbour index (exact, sklearn, faiss, hnswlib), distance matrices
postprocess      centering, PCA whitening, query expansion, DBA, k-reciprocal re-ranking
gallery          found-items gallery: paths and labels over the index, saved and loaded
retrieval        precision@k and mAP by label
duplicates       near-duplicate queries and their recall
matcher          the lost-to-found matcher (similarity, category, color, explained)
plots            figures of matches and distance heat-maps
match            all of the above in one import, for notebooks
cluster          clustering, the number of clusters, 2-D projections, extractor comparison
"""

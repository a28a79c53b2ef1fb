"""Similar images: haralick texture, CNN embeddings, nearest-neighbour search, matching, clusters.

texture      haralick texture features (a scikit-learn transformer), their classifier and index
embeddings   CNN embeddings of photos from any Keras application or the fine-tuned classifier
index        the one nearest-neighbour index (exact, sklearn, faiss, hnswlib), distance matrices
postprocess  GeM pooling, PCA whitening, query expansion, DBA, k-reciprocal re-ranking
gallery      found-items gallery: paths and labels over the index, saved and loaded
retrieval    precision@k and mAP by label
duplicates   near-duplicate queries and their recall
matcher      the lost-to-found matcher (similarity, category, color, explained)
plots        figures of matches and distance heat-maps
match        all of the above in one import, for notebooks
cluster      clustering, the number of clusters, 2-D projections, extractor comparison
"""

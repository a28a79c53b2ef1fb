"""Similar images: haralick texture, CNN embeddings, nearest-neighbour search, matching, clusters.

texture          haralick texture features (a scikit-learn transformer) and their presets
color_features   color histograms (the book's chist and CIELAB), texture + color as one union
image_features   the shared base: parallel, cached, Dask-capable extraction; CombinedFeatures
texture_eval     the tutorial's classifier, its evaluation, feature-set comparisons and speed
texture_search   the gallery index for texture (and color) similarity, its tables and figures
embeddings       CNN embeddings of photos from any Keras application or the fine-tuned classifier
index            distance matrices and the nearest-neighbour index
match            gallery search, retrieval scores, near-duplicate queries, the lost-to-found matcher
cluster          clustering, the number of clusters, 2-D projections, extractor comparison
"""

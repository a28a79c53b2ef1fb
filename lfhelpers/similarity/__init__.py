"""Similar images: haralick texture, CNN embeddings, nearest-neighbour search, matching, clusters.

texture      haralick texture features (a scikit-learn transformer), their classifier and index
embeddings   CNN embeddings of photos from any Keras application or the fine-tuned classifier
index        distance matrices and the nearest-neighbour index
match        gallery search, retrieval scores, near-duplicate queries, the lost-to-found matcher
cluster      clustering, the number of clusters, 2-D projections, extractor comparison
"""

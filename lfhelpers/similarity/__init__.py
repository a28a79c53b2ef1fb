"""Similar images and the same item: features, one search engine, its evaluation, batch jobs.

Folders by role, each using only the ones above it in this list (checked by
``tests/test_architecture.py``):

features/     what a photo becomes
    base        the shared base: parallel, cached, Dask-capable extraction; the one L2 normaliser
    texture     haralick texture features (a scikit-learn transformer) and their presets
    color       colour histograms (the book's chist and CIELAB), texture + colour as one union
    pooling     average, max and GeM pooling of a CNN's feature maps
    cnn         CNN embeddings from any Keras application or the fine-tuned classifier
    network     where those networks are cut (the trunk store's layer); the classifier's head
    registry    the extractor registry: names -> vectors, and which extractor searches
    keypoints   what a photo's local features are (positions, RootSIFT descriptors)
    local       their extraction and cache, for same-item matching
search/       finding found items for a lost photo
    exact       exact nearest neighbours (NumPy blocks)
    backends    the index libraries: backend names, what is installed, faiss and hnswlib
    index       the one nearest-neighbour index (exact, sklearn, faiss, hnswlib)
    distances   full distance matrices (the heat-map of notebook 05)
    postprocess centering, PCA whitening, query expansion, DBA, k-reciprocal re-ranking
    scaling     a gallery's scaling step: unit vectors + post-processing, or standardisation
    gallery     the one found-items gallery (CNN embeddings of notebook 06, texture and colour
                features of notebook 05): scaling step, index, paths and labels, saved
    tables      search results as neighbour and match tables
    vocabulary, words   the visual-word vocabulary tree, the visual-word shortlist
    verify, same_item   geometric verification, shortlist fusion, same-item re-ranking
evaluation/   how well it works
    retrieval   precision@k and mAP by label
    duplicates  near-duplicate queries and their recall
    texture     the tutorial's texture classifier, its evaluation and feature-set comparisons
plots         figures of matches, neighbours and distance heat-maps
cluster       clustering, the number of clusters, 2-D projections
matcher       the lost-to-found matcher (same item, similarity, category, colour, explained)
batch/        embeddings as Parquet shards (``embed``) on Dask workers; the Dask client
compare       extractors compared on retrieval, near duplicates and clustering
commands      the ``embed``, ``index`` and ``search`` commands
"""

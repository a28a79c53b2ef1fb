"""The category classifier: ImageNet Xception fine-tuned on the item photos (notebook 03).

xception   backbone weights and building, the trunk feature cache, the classifier, evaluation,
           figures, saving/loading and ``predict``
"""

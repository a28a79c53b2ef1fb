"""The category classifier: ImageNet Xception fine-tuned on the item photos (notebook 03).

backbones   weights resolution (``imagenet`` | file | ``none`` | ``auto``), building any Keras
            application, seeding, the ``tf.distribute`` strategy (shared with the embeddings)
trunk       the one store of Xception trunk activations (by backbone, size, layer, weights),
            shared by notebook 03, the embeddings of 06 and 07, and the audit
features    the frozen trunk run once per photo (:class:`FeatureCache`), on Keras or OpenVINO
xception    :class:`XceptionClassifier` (fit, predict_proba, evaluate, save, load)
evaluation  scikit-learn scores, comparison and top-k tables, learning curves, mistake gallery
predict     load a saved model, top-k of photos, the ``predict`` command
leak        augmented training rows, the augmentation-leak demo, the LostNet paper's protocol

Importing this package is cheap: TensorFlow loads with the modules that need it.
"""

"""Color names: the crowd-sourced color data, color-name models, and the main colors of photos.

names      color spaces, the color-name data and its models, naming with white/black/grey rules,
           dominant colors of item photos, figures and the ``color`` command
"""

from lfhelpers.color.names import *  # noqa: F403 - the stage's public API

"""Color names: the crowd-sourced color data, color-name models, and the main colors of photos.

data        the color-name data: reading, validation, the offline synthetic fixture
spaces      sRGB <-> CIELAB, HLS grids
models      the tutorial's Keras model and the scikit-learn models on CIELAB; fitting
evaluation  cross-validation with random folds and folds grouped by contributor
namer       the saved color-name model: save, load, train when missing, keep fixtures out
naming      white/black/grey from lightness and chroma, else the color-name model
photos      the item of a photo, its main colors (Palette), warnings, palette tables
checks      photos of known color, accuracy targets
plots       notebook 04's figures
command     ``python -m lfhelpers color IMAGE...``
"""

from lfhelpers.color.checks import known_color_check, make_known_color_photos, target_check
from lfhelpers.color.command import color_command
from lfhelpers.color.data import (
    COLOR_DATA_FILE,
    SYNTHETIC_SOURCE,
    TUTORIAL_LABELS,
    ColorData,
    is_synthetic_source,
    load_color_data,
    make_synthetic_color_entries,
    read_color_file,
    validate_color_entries,
)
from lfhelpers.color.evaluation import (
    TUTORIAL_REPORTED_ACCURACY,
    ColorEvaluation,
    cv_splits,
    evaluate_models,
)
from lfhelpers.color.models import (
    BEST_MODEL,
    MODEL_DESCRIPTIONS,
    TutorialColorClassifier,
    build_tutorial_model,
    count_model_params,
    fit_color_namer,
    import_keras,
    make_model,
    set_seed,
)
from lfhelpers.color.namer import (
    DEFAULT_MODEL_PATH,
    is_default_model_path,
    load_color_namer,
    read_color_namer,
    save_color_namer,
)
from lfhelpers.color.naming import (
    COLOR_NAMES,
    NAME_SWATCHES,
    NEUTRAL_NAMES,
    name_colors,
    neutral_names,
)
from lfhelpers.color.photos import (
    ColorShare,
    Palette,
    dominant_colors,
    extract_palettes,
    item_mask,
    kmeans,
    palette_table,
)
from lfhelpers.color.plots import (
    plot_color_counts,
    plot_confusion,
    plot_decision_regions,
    plot_palette_gallery,
)
from lfhelpers.color.spaces import hls_grid, lab_to_rgb, rgb_to_lab

__all__ = [
    # data
    "COLOR_DATA_FILE", "SYNTHETIC_SOURCE", "TUTORIAL_LABELS", "ColorData",
    "is_synthetic_source", "load_color_data", "make_synthetic_color_entries",
    "read_color_file", "validate_color_entries",
    # spaces
    "hls_grid", "lab_to_rgb", "rgb_to_lab",
    # models and evaluation
    "BEST_MODEL", "MODEL_DESCRIPTIONS", "TUTORIAL_REPORTED_ACCURACY", "ColorEvaluation",
    "TutorialColorClassifier", "build_tutorial_model", "count_model_params", "cv_splits",
    "import_keras", "set_seed",
    "evaluate_models", "fit_color_namer", "make_model",
    # the saved model
    "DEFAULT_MODEL_PATH", "is_default_model_path", "load_color_namer", "read_color_namer",
    "save_color_namer",
    # naming
    "COLOR_NAMES", "NAME_SWATCHES", "NEUTRAL_NAMES", "name_colors", "neutral_names",
    # photos
    "ColorShare", "Palette", "dominant_colors", "extract_palettes", "item_mask", "kmeans",
    "palette_table",
    # checks, plots, command
    "known_color_check", "make_known_color_photos", "target_check",
    "plot_color_counts", "plot_confusion", "plot_decision_regions", "plot_palette_gallery",
    "color_command",
]

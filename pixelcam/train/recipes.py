"""Training recipes: the settings a dataset trains best with, per phase.

A recipe fills the :class:`~pixelcam.train.config.TrainConfig` fields a user left at their
defaults (``pixelcam train --dataset glas`` without ``--resize`` gets the GlaS input size);
options given explicitly always win. The trainer dock's "recipe" button fills its form
from the same entries. Each recipe's numbers were measured: ``benchmarks/RESULTS.md``
names the section. In Python, a :class:`~pixelcam.train.config.TrainConfig` gets a recipe
only when asked: ``apply_recipe(config, given=set())``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pixelcam.registry import Registry

#: dataset name -> {"all": settings of every phase, "<phase>": that phase's settings}
RECIPES: Registry[Mapping[str, Mapping[str, Any]]] = Registry("recipe")

RECIPES.register(
    "glas",
    help="real GlaS H&E on a CPU: near-native resolution (640 px), 320 px crops, ImageNet "
    "EfficientNet-Lite0, student seeds from the top/bottom 5 % of the teacher's CAM averaged "
    "over 3 scales x 4 flips, its lr x0.1 after 6 epochs; RESULTS section 8",
)(
    {
        "all": {"resize": 640, "crop": 320, "eval_size": 640, "batch_size": 16, "lr": 1e-3},
        "baseline": {"backbone": "tf_efficientnet_lite0", "weights": "imagenet", "epochs": 30},
        "pixelcam": {"epochs": 12, "lr_step": 6, "sampler": "extremes", "bg_fraction": 0.05,
                     "teacher_views": "multiscale"},
    }
)  # fmt: skip


def recipe_settings(dataset: str, phase: str) -> dict[str, Any]:
    """The recipe's settings for ``dataset`` and ``phase`` (empty without a recipe)."""
    if dataset not in RECIPES:
        return {}
    recipe = RECIPES.get(dataset)
    return {**recipe.get("all", {}), **recipe.get(phase, {})}


def apply_recipe(config: Any, given: Collection[str]) -> dict[str, Any]:
    """Set the recipe's settings on ``config`` where the user ``given`` none; returns what
    was set (to say so at the start of the run)."""
    applied = {}
    for key, value in recipe_settings(config.dataset, config.phase).items():
        if key not in given and hasattr(config, key) and getattr(config, key) != value:
            setattr(config, key, value)
            applied[key] = value
    return applied

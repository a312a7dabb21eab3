"""View recipes as plain data, and the presets of the official SSL recipes.

A :class:`View` says how one view of every sample is made (crop, resize filter, flip, colour
jitter, grayscale, blur, solarize, each with its probability); a :class:`Recipe` is the list of
views made from every sample. The fields are those of the Rust loader's ``ViewSpec`` and
``Recipe``, so a recipe means the same thing from Python, from Rust and in a training config.

The presets are the Rust loader's own (each names the code it reproduces)::

    recipes.mocov2(224)      # facebookresearch/moco main_moco.py --aug-plus
    recipes.simclr(224)      # google-research/simclr, colour strength 1
    recipes.byol(224)        # asymmetric: blur p 1.0 / 0.1, solarize p 0 / 0.2
    recipes.dino(2, 6)       # DINO multi-crop: 224 px globals, 96 px locals, bicubic
    recipes.supervised(224)  # torchvision's classification reference
    recipes.eval_center(256, 224)  # Resize(256) + CenterCrop(224)

A preset is a starting point: ``dataclasses.replace`` any field, or write your own views.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from regioncl import _native

__all__ = [
    "Recipe",
    "View",
    "byol",
    "dino",
    "eval_center",
    "mocov2",
    "simclr",
    "supervised",
]

Interpolation = Literal["bilinear", "bicubic"]


@dataclass(frozen=True, init=False)
class View:
    """How one view is made. ``View(size)`` is the MoCo v2 view at ``size`` pixels; any field can
    be given by keyword.

    Crop: RandomResizedCrop with area fraction ``scale`` and aspect ``ratio`` (w/h), resized with
    ``interpolation`` (antialiased) to ``width`` x ``height``, flipped with probability ``flip_p``.
    Colour (applied by the loader's CPU workers, or on the GPU by :mod:`regioncl.torch`):
    ColorJitter(``brightness``, ``contrast``, ``saturation``, ``hue``) with probability
    ``jitter_p`` in a random order; grayscale with ``grayscale_p``; Gaussian blur with ``blur_p``,
    sigma drawn from ``blur_sigma`` (output pixels); solarize at 0.5 with ``solarize_p``.
    """

    width: int
    height: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    interpolation: Interpolation
    flip_p: float
    jitter_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    solarize_p: float

    def __init__(self, size: int | tuple[int, int] | None = None, **fields: Any) -> None:
        """``size``: an int for a square view, or ``(height, width)`` as torchvision takes it (or
        give ``width`` and ``height``). Fields not given take the MoCo v2 values: scale (0.2, 1.0),
        ratio (3/4, 4/3), bilinear, flip_p 0.5, jitter_p 0.8, brightness/contrast/saturation 0.4,
        hue 0.1, grayscale_p 0.2, blur_p 0.5, blur_sigma (0.1, 2.0), solarize_p 0."""
        if size is not None:
            if "width" in fields or "height" in fields:
                raise TypeError("View: give size, or width and height, not both")
            height, width = (size, size) if isinstance(size, int) else size
            fields = {"width": width, "height": height, **fields}
        if "width" not in fields or "height" not in fields:
            raise TypeError("View: needs a size (or width and height)")
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise TypeError(f"View: unknown field(s) {sorted(unknown)}; fields are {_FIELDS}")
        values: dict[str, Any] = {**_DEFAULTS, **fields}
        for name, value in values.items():
            if name in ("width", "height"):
                value = int(value)
            elif isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, name, value)


_FIELDS = tuple(View.__dataclass_fields__)
# The Rust loader's default view (MoCo v2), less its size: one source for every number.
_DEFAULTS: dict[str, Any] = {
    k: v for k, v in json.loads(_native.default_view()).items() if k not in ("width", "height")
}


@dataclass(frozen=True)
class Recipe:
    """The views made from every sample. View 0 is the query view of two-view methods (and the
    view a RegionCL swap box is planned for).

    ``center_resize``: when set, crops are not random but the evaluation crop: the shorter side
    resized to ``center_resize``, then the central ``width`` x ``height`` of each view (no flip, no
    colour).
    """

    views: tuple[View, ...]
    center_resize: int | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(self.views))

    def to_json(self, colour_on_cpu: bool) -> str:
        """The Rust loader's recipe (serde), with colour on the CPU workers or left to the
        consumer."""
        sampling: dict[str, Any] = (
            {"kind": "random"}
            if self.center_resize is None
            else {"kind": "center", "resize": self.center_resize}
        )
        return json.dumps(
            {
                "views": [asdict(v) for v in self.views],
                "color_on": "cpu" if colour_on_cpu else "consumer",
                "sampling": sampling,
            }
        )

    @staticmethod
    def from_json(text: str) -> Recipe:
        """A recipe from the Rust loader's serde form."""
        raw = json.loads(text)
        views = tuple(View(**v) for v in raw["views"])
        sampling = raw.get("sampling", {"kind": "random"})
        return Recipe(views, sampling.get("resize") if sampling["kind"] == "center" else None)


def _preset(name: str, *args: int) -> Recipe:
    return Recipe.from_json(_native.preset(name, list(args)))


def mocov2(size: int = 224) -> Recipe:
    """MoCo v2: two views alike (RandomResizedCrop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4,
    0.1) p 0.8, grayscale p 0.2, blur p 0.5, flip)."""
    return _preset("mocov2", size)


def simclr(size: int = 224) -> Recipe:
    """SimCLR: two views alike (scale (0.08, 1), ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8,
    grayscale p 0.2, blur p 0.5)."""
    return _preset("simclr", size)


def byol(size: int = 224) -> Recipe:
    """BYOL: two asymmetric views (blur p 1.0 and 0.1, solarize p 0 and 0.2)."""
    return _preset("byol", size)


def dino(global_views: int = 2, local_views: int = 6) -> Recipe:
    """DINO multi-crop: ``global_views`` 224 px crops (scale (0.4, 1)), then ``local_views`` 96 px
    crops (scale (0.05, 0.4)), bicubic. DINO's own default is 8 local views."""
    return _preset("dino", global_views, local_views)


def supervised(size: int = 224) -> Recipe:
    """Supervised training: one RandomResizedCrop (scale (0.08, 1)) with a flip, no colour."""
    return _preset("supervised", size)


def eval_center(resize: int = 256, crop: int = 224) -> Recipe:
    """Evaluation: torchvision's ``Resize(resize)`` + ``CenterCrop(crop)``."""
    return _preset("eval_center", resize, crop)

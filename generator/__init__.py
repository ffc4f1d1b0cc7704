"""Lens gallery generator: MACO feature visualizations and CRAFT concepts for every ImageNet class.

Modules, in the order data flows: config -> classes -> models -> spectrum, maco, nmf, sobol, craft
-> quality -> store -> plan -> workers -> site -> cli.

The Python API (generator/api.py) is exported here, loaded on first use so that torch-free tools
(the site) never import torch:

    import generator as lens
    model = lens.from_zoo("efficientnet-lite0")
    [espresso] = lens.visualize(model, "espresso", steps=32, image_size=128)
"""

from typing import Any

from .version import __version__ as __version__

_API = frozenset({
    "Model", "Visualization", "Concept", "CraftResult", "Record", "StoredPicture", "StoredConcept", "Store",
    "from_zoo", "from_timm", "from_module", "visualize", "visualize_directions", "find_concepts", "demo_images", "open_store",
    "render", "layers", "MacoSettings", "CraftSettings",
})
__all__ = sorted(_API | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'generator' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)

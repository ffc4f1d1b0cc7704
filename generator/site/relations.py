"""Relations between concepts (issue 12): importance charts, similar concepts across classes,
alignment with classes, decision strategies and the model-wide concept map. (Filled in next.)"""

from __future__ import annotations

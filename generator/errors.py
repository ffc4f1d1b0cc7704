"""The one hierarchy of user-facing failures.

Every error caused by the user's input (a config file, a checkpoint, a flag, a store record) is a
`LensError`: the CLI prints its message as one line and exits 2, in one place (`cli.main`). Anything
else is a bug and keeps its traceback. This module imports nothing heavy, so torch-free commands
(site, serve) can catch every subclass without importing torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class LensError(Exception):
    """Bad input from the user; the message is one line that names the file, key, model, class or flag."""

    exit_code = 2


class ConfigError(LensError, ValueError):
    """models.yaml, a preset, a settings override or a path named in them is unusable."""


class ClassSpecError(LensError, ValueError):
    """A class SPEC that does not parse; the message names the offending part."""


class PlanError(LensError, ValueError):
    """Bad command-line input for a render (shard, parts...)."""


class ModelError(LensError, RuntimeError):
    """A model that cannot be built or loaded; the message names the model and the cause."""


class CraftError(LensError, RuntimeError):
    """CRAFT cannot run for this model/layer; the message says why and what to change."""


class DictionaryError(LensError, RuntimeError):
    """The model-wide dictionary cannot be trained or resumed (bad tokens, a checkpoint of other settings)."""


class SiteError(LensError, ValueError):
    """A site cannot be built as asked (e.g. the output folder is not ours to overwrite)."""


class StoreError(LensError, OSError):
    """The artifact store cannot be read or written (read-only, full disk, a path that is not a store)."""


class OutputError(LensError, OSError):
    """A file a command was asked to write (a figure, a spectrum, models.yaml) cannot be written there."""


@contextlib.contextmanager
def output_errors(path: object) -> Iterator[None]:
    """OSErrors while writing `path` become one OutputError line naming it (its folder is read-only,
    full, or a file stands where a folder must be)."""
    try:
        yield
    except LensError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None

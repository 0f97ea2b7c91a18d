"""Saving a model and its config in one file, and loading it back safely.

The file is a plain dict of strings, numbers and tensors, so it loads with
``torch.load(..., weights_only=True)``: opening a file cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["save_model", "load_model", "atomic_torch_save", "SavesToFile", "FORMAT"]

FORMAT = "transformer_core.model/1"


def _model_classes() -> dict[str, tuple[type, type]]:
    from .encoder_only import BERT, BERTConfig
    from .gpt import GPT, GPTConfig
    from .moe import MoEGPT, MoEGPTConfig
    from .transformer import Transformer, TransformerConfig

    return {
        "GPT": (GPT, GPTConfig),
        "Transformer": (Transformer, TransformerConfig),
        "BERT": (BERT, BERTConfig),
        "MoEGPT": (MoEGPT, MoEGPTConfig),
    }


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model``'s class, config and weights to ``path``.

    The file is written next to its destination and then renamed over it, so an interrupted save
    never leaves a half-written file in place of a good one. ``extra`` holds plain values of your own
    (a step count, a tokenizer's vocabulary as a list of strings, ...).
    """
    name = type(model).__name__
    if name not in _model_classes():
        raise TypeError(f"save_model saves {', '.join(_model_classes())} models, got {name}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "class": name,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` so that ``path`` holds the old file or the whole new one, never half.

    The bytes go to a hidden temporary file beside ``path`` (same folder, same file system), are
    flushed and fsync'ed to the disk, and only then is the file renamed over ``path`` (atomic); the
    folder is fsync'ed too, so that the rename itself survives a power cut. A save that fails or is
    interrupted part-way (an exception, Ctrl-C, a full disk) removes its temporary file and leaves
    the previous ``path`` as it was; one killed outright leaves a stray ``.NAME.*.tmp`` beside it,
    never a damaged ``path``. Used by :func:`save_model` and ``Trainer.save_checkpoint``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)  # atomic: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: a folder cannot be opened; its renames are durable anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders
    finally:
        os.close(fd)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", return_extra: bool = False):
    """Rebuild the model saved by :func:`save_model`; with ``return_extra`` also return its ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    # A damaged file can make the weights-only unpickler fail in any way (IndexError, KeyError,
    # UnicodeDecodeError, ...); none of those is the reader's bug, so all become one clear error.
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"{path} is not a readable model file (damaged, truncated, or not saved by save_model): {err}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by transformer_core.save_model (format {FORMAT!r} expected)")
    classes = _model_classes()
    if payload.get("class") not in classes:
        raise ValueError(f"{path} holds an unknown model class {payload.get('class')!r}")
    model_cls, config_cls = classes[payload["class"]]
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"{path} is damaged: its {key!r} entry is missing or not a dict")
    try:
        config = config_cls.from_dict(payload["config"])
    except TypeError as err:  # a required field is missing
        raise ValueError(f"the config in {path} is incomplete: {err}") from err
    model = model_cls(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not match its config: {err}") from err
    model.to(map_location)
    return (model, payload.get("extra", {})) if return_extra else model


class SavesToFile:
    """``model.save(path)`` and ``Model.load(path)`` for the package's models, one file each.

    Mixed into :class:`~transformer_core.GPT`, :class:`~transformer_core.Transformer` and
    :class:`~transformer_core.BERT` (and so into their subclasses): thin wrappers of
    :func:`save_model` and :func:`load_model`.
    """

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config and weights to one file (see :func:`save_model`)."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Load a file written by :meth:`save`; a file that holds another kind of model is an error."""
        model = load_model(path, map_location=map_location)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

"""Saving a model and its config in one file, and loading it back safely.

One model payload, two kinds of file:

* a **model file** (:func:`save_model`, ``model.save(path)``) is the payload itself: the model's
  class, its config as a plain dict, its weights and an ``extra`` dict of your own;
* a **training checkpoint** (``Trainer.save_checkpoint``) holds the same payload under ``"model"``,
  beside the optimizer, the random states and the history that resuming needs.

:func:`load_model` (and ``GPT.load``, ``BERT.load``, ...) opens both. Both are plain dicts of
strings, numbers and tensors, so they load with ``torch.load(..., weights_only=True)``: opening a
file cannot run code. Both are written by :func:`atomic_torch_save`: a save cut short never leaves
a damaged file in place of a good one.

The model classes register themselves: a subclass of :class:`SavesToFile` that names its
``config_class`` can be saved and loaded (GPT, MoEGPT, BERT, Transformer). This module imports no
model module, so the models can import it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT",
    "SavesToFile",
    "atomic_torch_save",
    "load_model",
    "model_payload",
    "plain_config",
    "read_payload",
    "save_model",
]

FORMAT = "transformer_core.model/1"
CHECKPOINT_FORMAT = "transformer_core.training/2"  # /2: the model inside is a model payload

_MODEL_CLASSES: dict[str, type[nn.Module]] = {}  # class name -> class, filled by SavesToFile


class SavesToFile:
    """``model.save(path)`` and ``Model.load(path)`` for the package's models, one file each.

    Mixed into :class:`~transformer_core.GPT`, :class:`~transformer_core.Transformer` and
    :class:`~transformer_core.BERT`. A class that sets ``config_class`` in its body registers
    itself for :func:`save_model` and :func:`load_model` (MoEGPT does; a subclass that does not is
    saved and loaded only as what it is, which it refuses).
    """

    config_class: ClassVar[type]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in vars(cls):
            _MODEL_CLASSES[cls.__name__] = cls  # type: ignore[assignment]

    @classmethod
    def checked_config(cls, config):
        """``config``, if it is a ``config_class``; a TypeError naming both otherwise."""
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.config_class.__name__}, got {type(config).__name__}")
        return config

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the config and weights to one file (see :func:`save_model`)."""
        return save_model(self, path, extra)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Load a model file or a training checkpoint; a file that holds another kind of model is an error."""
        model = load_model(path, map_location=map_location)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def plain_config(model: nn.Module) -> dict | None:
    """``model.config.to_dict()``, or None for a model without such a config."""
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else None


def model_payload(model: nn.Module, extra: dict | None = None) -> dict:
    """What a model file holds: ``{"format", "class", "config", "state_dict", "extra"}``.

    The weights are detached CPU copies; ``config`` is :func:`plain_config`'s (a training checkpoint
    of any ``nn.Module`` holds a payload too, with ``config`` None if the model has none).
    """
    return {
        "format": FORMAT,
        "class": type(model).__name__,
        "config": plain_config(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model``'s class, config and weights to ``path``, atomically (:func:`atomic_torch_save`).

    ``extra`` holds plain values of your own (a step count, a tokenizer's vocabulary as a list of
    strings, ...).
    """
    if _MODEL_CLASSES.get(type(model).__name__) is not type(model):
        raise TypeError(f"save_model saves {', '.join(sorted(_MODEL_CLASSES))} models, got {type(model).__name__}")
    return atomic_torch_save(model_payload(model, extra), path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` so that ``path`` holds the old file or the whole new one, never half.

    The bytes go to a hidden temporary file beside ``path`` (same folder, same file system), are
    flushed and fsync'ed to the disk, and only then is the file renamed over ``path`` (atomic); the
    folder is fsync'ed too, so that the rename itself survives a power cut. A save that fails or is
    interrupted part-way (an exception, Ctrl-C, a full disk) removes its temporary file and leaves
    the previous ``path`` as it was; one killed outright leaves a stray ``.NAME.*.tmp`` beside it,
    never a damaged ``path``. The one writer of the package's files.
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


def read_payload(path: str | os.PathLike, what: str = "model file", map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with one clear error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    # A damaged file can make the weights-only unpickler fail in any way (IndexError, KeyError,
    # UnicodeDecodeError, ...); none of those is the reader's bug, so all become one clear error.
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable {what} (damaged, truncated, or not saved by "
                         f"transformer_core): {err}") from err


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", return_extra: bool = False):
    """Rebuild the model of a model file (:func:`save_model`) or of a training checkpoint
    (``Trainer.save_checkpoint``); with ``return_extra`` also return the payload's ``extra``."""
    payload = read_payload(path, map_location=map_location)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        payload = payload.get("model")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by transformer_core.save_model (format {FORMAT!r} expected)")
    model_cls = _MODEL_CLASSES.get(payload.get("class"))
    if model_cls is None:
        raise ValueError(f"{path} holds an unknown model class {payload.get('class')!r}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"{path} is damaged: its {key!r} entry is missing or not a dict")
    try:
        config = model_cls.config_class.from_dict(payload["config"])
    except TypeError as err:  # a required field is missing
        raise ValueError(f"the config in {path} is incomplete: {err}") from err
    model = model_cls(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not match its config: {err}") from err
    model.to(map_location)
    return (model, payload.get("extra", {})) if return_extra else model

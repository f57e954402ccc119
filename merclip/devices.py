"""The torch device of a `device` setting or flag ("auto" | "cpu" | "cuda"), for serving and
training alike.

"auto" is CUDA when torch sees a CUDA device, else the CPU. An explicit "cuda" without one is a
ConfigError at start-up, never a silent fall-back to the CPU (a GPU run that quietly ran on the
CPU would be misread) and never a torch error deep inside model loading.
"""

from __future__ import annotations

import torch

from merclip.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str, key: str = "device") -> torch.device:
    """ "auto" → CUDA when available, else CPU; `key` names the setting in the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{key} is {name!r}, not a torch device: use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{key} is {name!r} but no CUDA device is available: set it to 'auto' (CUDA when "
            "there is one) or 'cpu'"
        )
    return device

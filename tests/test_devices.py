"""The one device resolver of serving and training: "auto" | "cpu" | "cuda"."""

from __future__ import annotations

import pytest
import torch

from merclip.devices import resolve_device
from merclip.errors import ConfigError
from merclip.predictor import Predictor
from workers.app.settings import Settings

pytestmark = pytest.mark.unit

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_auto_is_cuda_when_there_is_one_else_the_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@no_cuda
def test_cuda_requested_without_cuda_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"train.device is 'cuda' but no CUDA device.*'cpu'"):
        resolve_device("cuda", "train.device")
    with pytest.raises(ConfigError, match="inference.device is 'cuda'"):
        Predictor.from_settings(Settings().replace("inference", device="cuda"))


def test_a_name_that_is_no_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--device is 'gpu', not a torch device"):
        resolve_device("gpu", "--device")

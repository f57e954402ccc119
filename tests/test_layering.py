"""The import graph follows the layers of docs/INTERFACES.md: workers/app → workers → stream →
merclip, never upwards (lazy imports inside functions included), and inference never loads the
training side."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from merclip.errors import DatasetError

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("merclip", "stream", "workers")


def _imports(package: str) -> dict[str, set[str]]:
    """{file: project modules it imports}, every import statement of the package's files."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[str(path.relative_to(ROOT))] = {n for n in names if n.split(".")[0] in LOCAL}
    return found


def _violations(package: str, allowed: tuple[str, ...]) -> list[str]:
    return [
        f"{file} imports {name}"
        for file, names in _imports(package).items()
        for name in sorted(names)
        if not any(name == a or name.startswith(a + ".") for a in allowed)
    ]


def test_the_model_library_imports_only_itself() -> None:
    assert _violations("merclip", ("merclip",)) == []


def test_stream_imports_only_itself_and_merclips_shared_base() -> None:
    assert _violations("stream", ("stream", "merclip.errors", "merclip.typed_config")) == []


def test_the_stages_never_import_the_service_layer() -> None:
    upward = [
        f"{file} imports {name}"
        for file, names in _imports("workers").items()
        if not file.startswith("workers/app/")
        for name in sorted(names)
        if name == "workers.app" or name.startswith("workers.app.")
    ]
    assert upward == []


def test_inference_never_loads_training_or_data() -> None:
    code = (
        "import sys, workers.inference, merclip.predictor\n"
        "side = ('merclip.training', 'merclip.data')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(side))\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_raw_datasets_without_the_live_featuriser_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import merclip.raw_features as raw_features
    from merclip.data.sources import load_data

    monkeypatch.setattr(raw_features, "_registered", None)
    with pytest.raises(DatasetError, match="use_live_featurizer"):
        load_data(f"meld:{ROOT}", None)

"""A user's helper modules win inside their script whatever they are named, the names of this runtime's own packages and
modules included, and the runtime keeps its own."""

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import models
import serve
from serve.app import create_app
from serve.loading import build_handler
from serve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Every top-level name and every module name this runtime uses (a user may well call a helper settings.py or models.py).
OUR_NAMES = sorted(({"serve", "models", "tests", "bench"}
                    | {path.stem for package in ("serve", "models") for path in (ROOT / package).rglob("*.py")
                       if not path.stem.startswith("_")}
                    | {path.name for package in ("serve", "models") for path in (ROOT / package).iterdir()
                       if path.is_dir() and (path / "__init__.py").exists()})
                   - {"inference"}  # code/inference.py is the script itself
                   - set(sys.stdlib_module_names))  # codecs: the standard library's names stay Python's

SCRIPT = """
import numpy as np
import {name}
from {name} import marker


def predict_fn(data, model):
    import {name} as again  # imported when called, too
    return np.full(len(data), {name}.marker + again.marker + marker)
"""


def model_with_helper(tmp_path: Path, source: Path, name: str, package: bool) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(source, model_dir)
    code = model_dir / "code"
    code.mkdir()
    (code / "inference.py").write_text(textwrap.dedent(SCRIPT.format(name=name)))
    helper = code / name / "__init__.py" if package else code / f"{name}.py"
    helper.parent.mkdir(exist_ok=True)
    helper.write_text("marker = 7.0\n")
    return model_dir


@pytest.mark.parametrize("package", [False, True], ids=["module", "package"])
@pytest.mark.parametrize("name", OUR_NAMES)
def test_a_helper_named_like_our_own_modules_wins_inside_the_script(tmp_path, outcome_dir, name, package):
    ours = {key: module for key, module in sys.modules.items() if key.split(".")[0] == name}
    settings = Settings(model_dir=model_with_helper(tmp_path, outcome_dir, name, package), workers=1)
    client = create_app(build_handler(settings), settings).test_client()
    response = client.post("/invocations", data=b"1,2,3,4\n5,6,7,8", headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.data
    assert response.data == b"21.0\n21.0\n"
    assert {key: module for key, module in sys.modules.items() if key.split(".")[0] == name} == ours
    assert sys.modules["serve"] is serve and sys.modules["models"] is models


def test_the_names_cover_our_packages_and_modules():
    assert {"serve", "models", "settings", "handler", "app", "server", "xgboost", "pat", "inputs", "user_hooks"} <= \
        set(OUR_NAMES)

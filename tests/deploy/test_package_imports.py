"""The deploy package's import structure: no module of containers/deploy/sagemaker_deploy imports one that imports
it back, directly or around a longer cycle, at the top of a module or inside a function (tests/unit/test_imports.py
checks serve/ and models/ the same way)."""

from __future__ import annotations

from tests.unit.test_imports import ROOT, cycles, import_graph, python_files

PACKAGE = "containers/deploy/sagemaker_deploy"


def test_the_deploy_package_has_no_import_cycle():
    graph = import_graph(python_files(PACKAGE))
    assert len(graph) > 10 and "containers.deploy.sagemaker_deploy.stack" in graph
    assert "containers.deploy.sagemaker_deploy.plan" in graph["containers.deploy.sagemaker_deploy.stack"]
    assert cycles(graph) == []


def test_the_check_sees_a_cycle_through_an_import_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from .a import other\n")
    files = {f"pkg.{path.stem}": path for path in package.glob("[ab].py")}
    from tests.unit import test_imports

    graph = {name: {other for other in test_imports.imported_names(path, tmp_path) if other in files
                    and other != name} for name, path in files.items()}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert ROOT.joinpath(PACKAGE).is_dir()

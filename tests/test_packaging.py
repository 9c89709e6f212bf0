"""The package's metadata (pyproject.toml): `pip install .[study]` brings every distribution
that a sweep imports, `[all]` every one the package's code imports, the version is
CITATION.cff's, and CITATION.cff holds what CFF 1.2.0 requires."""
import ast
import functools
import importlib.metadata
import pathlib
import re
import sys
import tomllib

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = ("rnn_research", "launch", "kernels", "experiments")
# What a sweep on this machine (launch.local) runs: the launcher and its workers, the studies,
# every task (imported by name), the training loop and the report.
SWEEP_ROOTS = ("launch/local.py", "launch/worker.py", "experiments/odyssey.py",
               "experiments/rnn_vs_transformer.py", "rnn_research/tasks/*.py",
               "rnn_research/train.py", "rnn_research/analysis/report.py")


def canonical(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def declared(*extras: str) -> set[str]:
  """The distributions that `pip install rnn_research[extras]` asks for by name."""
  names, todo, seen = set(), list(PROJECT["dependencies"]), set()
  for extra in extras:
    todo += PROJECT["optional-dependencies"][extra]
  while todo:
    requirement = Requirement(todo.pop())
    if canonical(requirement.name) == canonical(PROJECT["name"]):  # one of our own extras
      for extra in requirement.extras - seen:
        seen.add(extra)
        todo += PROJECT["optional-dependencies"][extra]
    else:
      names.add(canonical(requirement.name))
  return names


def installed_with(names: set[str]) -> set[str]:
  """`names` and every distribution they require, as the installed ones declare."""
  closure, todo = set(), list(names)
  while todo:
    name = todo.pop()
    if name in closure:
      continue
    closure.add(name)
    try:
      requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
      continue
    for line in requires:
      requirement = Requirement(line)
      if requirement.marker is None or requirement.marker.evaluate(
          {**default_environment(), "extra": ""}):
        todo.append(canonical(requirement.name))
  return closure


def _module_file(name: str) -> pathlib.Path | None:
  path = ROOT.joinpath(*name.split("."))
  for candidate in (path.with_suffix(".py"), path / "__init__.py"):
    if candidate.is_file():
      return candidate
  return None


def _imported_names(path: pathlib.Path) -> set[str]:
  """The modules a file imports, wherever in it (lazy imports in functions included)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module)
      names |= {f"{node.module}.{alias.name}" for alias in node.names}  # submodules
  return names


def third_party_imports(roots) -> set[str]:
  """The top-level names of the modules outside this repository and the standard library that
  the files `roots` import, following the imports of this repository's modules."""
  todo = [p for pattern in roots for p in ROOT.glob(pattern)]
  seen, outside = set(), set()
  while todo:
    path = todo.pop()
    if path in seen:
      continue
    seen.add(path)
    for name in _imported_names(path):
      top = name.split(".")[0]
      if top in OURS:
        parts = name.split(".")
        todo += [f for k in range(1, len(parts) + 1)
                 if (f := _module_file(".".join(parts[:k]))) is not None]
      elif top not in sys.stdlib_module_names and top != "__future__":
        outside.add(top)
  return outside


@functools.cache
def _packages() -> dict[str, list[str]]:
  return importlib.metadata.packages_distributions()


def _distributions_of(top: str) -> list[str]:
  return [canonical(d) for d in _packages().get(top, ())]


def undeclared(imports: set[str], declared_names: set[str]) -> dict[str, list[str]]:
  """{module: its distributions} of the imports that no declared distribution brings."""
  brought = installed_with(declared_names)
  return {top: _distributions_of(top) for top in sorted(imports)
          if not set(_distributions_of(top)) & brought}


def test_the_study_extra_brings_all_a_sweep_imports():
  imports = third_party_imports(SWEEP_ROOTS)
  assert {"jax", "optuna", "matplotlib", "music21", "grain"} <= imports  # the walk finds them
  imports.add("sklearn")  # imported by Optuna's fANOVA (the report's importances)
  assert undeclared(imports, declared("study")) == {}


def test_the_all_extra_brings_all_the_package_imports():
  imports = third_party_imports(["rnn_research/**/*.py", "launch/*.py", "kernels/**/*.py",
                                 "experiments/*.py"])
  assert {"submitit", "sklearn", "tensorflow_datasets"} <= imports
  assert undeclared(imports, declared("all")) == {}
  assert declared("data", "study", "cluster") <= declared("all") < declared("test")


def test_the_check_names_what_an_extra_leaves_out():
  assert undeclared({"music21", "optuna"}, declared()) == {"music21": ["music21"],
                                                            "optuna": ["optuna"]}


def test_the_citation_is_valid_cff_with_the_package_version():
  citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
  assert citation["cff-version"] == "1.2.0"
  assert {"cff-version", "message", "title", "authors"} <= set(citation)
  assert all(author.get("name") or author.get("family-names") for author in citation["authors"])
  assert citation["version"] == PROJECT["version"]
  assert citation["license"] == PROJECT["license"] == "Apache-2.0"
  assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]

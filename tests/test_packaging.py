"""The house rules that keep the package installable beside anything and its layers apart (issue 15).

- The wheel installs one import package, ``aibackup``: the repository's connectors/ and manifests/ go in as
  ``aibackup.connectors`` and ``aibackup.manifests`` (with the JSON Schema and the ``py.typed`` markers).
- Imports flow one way: manifests/ imports nothing of aibackup's but itself; connectors/ import themselves,
  the manifests and ``aibackup.errors`` only; nothing imports the top-level folders by their own names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_only_the_aibackup_package(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("aibackup-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"aibackup"}
    info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(info).decode().split() == ["aibackup"]
    for needed in (
        "aibackup/py.typed",
        "aibackup/connectors/py.typed",
        "aibackup/connectors/base.py",
        "aibackup/connectors/registry.py",
        "aibackup/connectors/chroma/connector.py",
        "aibackup/connectors/qdrant/connector.py",
        "aibackup/connectors/files/conversations.py",
        "aibackup/manifests/py.typed",
        "aibackup/manifests/model.py",
        "aibackup/manifests/schema/bundle-manifest.v1.json",
    ):
        assert needed in names, needed
    # Every module of the two folders is in the wheel, under aibackup.
    for folder in ("connectors", "manifests"):
        for path in (ROOT / folder).rglob("*.py"):
            assert f"aibackup/{path.relative_to(ROOT).as_posix()}" in names, path


def imports_of(path: Path, package: str) -> set[str]:
    """The modules a file imports (relative imports resolved against `package`, the file's package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def modules(folder: str) -> list[tuple[Path, str]]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        package = ".".join(["aibackup", *(parts if parts[-1] == "__init__" else parts[:-1])])
        out.append((path, package.removesuffix(".__init__")))
    return out


def ours(name: str) -> bool:
    return name == "aibackup" or name.startswith("aibackup.")


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [
        ("manifests", ("aibackup.manifests",)),
        ("connectors", ("aibackup.connectors", "aibackup.manifests", "aibackup.errors")),
    ],
)
def test_imports_flow_one_way(folder: str, allowed: tuple[str, ...]) -> None:
    wrong = []
    for path, package in modules(folder):
        for name in imports_of(path, package):
            if ours(name) and not any(name == a or name.startswith(a + ".") for a in allowed):
                # `from aibackup.errors import X` also records "aibackup.errors.X": allowed with its module.
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, wrong


def test_nothing_imports_the_top_level_folders_by_their_own_names() -> None:
    wrong = []
    for folder in ("aibackup", "connectors", "manifests", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT).parts
            if any(p.startswith(".") for p in parts):
                continue  # caches (benchmarks/.cache holds other projects' virtualenvs)
            if folder == "aibackup" and parts[1] in ("connectors", "manifests"):
                continue  # the links to the top-level folders: checked there
            for name in imports_of(path, "x"):
                if name.split(".")[0] in ("connectors", "manifests"):
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, wrong


def test_the_connectors_run_without_the_core_loaded() -> None:
    """Importing every connector module (and the manifests) leaves the core unimported: a connector can be
    used, and tested, with nothing but its contract."""
    code = (
        "import sys, importlib, pkgutil\n"
        "import aibackup.connectors as c, aibackup.manifests\n"
        "for m in pkgutil.walk_packages(c.__path__, 'aibackup.connectors.'):\n"
        "    importlib.import_module(m.name)\n"
        "core = ('backup', 'restore', 'storage', 'repository', 'cli', 'bundle', 'checks', 'operations')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[:2][-1] in core and n.startswith('aibackup.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_commands_that_touch_no_store_run_without_the_client_libraries(tmp_path: Path) -> None:
    """The registry imports a backend only when its scheme is used: without chromadb and qdrant-client
    installed, `aibackup list` still runs, and a Chroma URI names the extra to install."""
    code = (
        "import sys\n"
        "sys.modules['chromadb'] = None; sys.modules['qdrant_client'] = None  # as if not installed\n"
        "from aibackup.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    repo = str(tmp_path / "repo")
    init = subprocess.run([sys.executable, "-c", code, "init", "--repo", repo], capture_output=True, text=True)
    listed = subprocess.run([sys.executable, "-c", code, "list", "--repo", repo], capture_output=True, text=True)
    assert (init.returncode, listed.returncode, listed.stdout) == (0, 0, "no bundles yet\n"), listed.stderr
    chroma = subprocess.run(
        [sys.executable, "-c", code, "backup", f"chroma:{tmp_path}", "--repo", repo], capture_output=True, text=True
    )
    assert chroma.returncode == 2 and "aibackup[chroma]" in chroma.stderr, chroma.stderr


@pytest.mark.parametrize(
    ("module", "uri", "extra"),
    [
        ("psycopg", "pgvector://u@127.0.0.1:1/db", "pgvector"),
        ("psycopg", "conversations+postgresql://u@127.0.0.1:1/db?table=t", "pgvector"),
        ("lancedb", "lancedb:{tmp}", "lancedb"),
        ("pymilvus", "milvus:{tmp}/m.db", "milvus"),
    ],
)
def test_a_missing_client_library_names_its_extra(tmp_path: Path, module: str, uri: str, extra: str) -> None:
    """Each store's client library is an extra: without it, one line naming the extra (exit 2)."""
    code = (
        f"import sys\nsys.modules[{module!r}] = None  # as if not installed\n"
        "from aibackup.cli import main\nmain(sys.argv[1:])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, "backup", uri.format(tmp=tmp_path), "--repo", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and f"aibackup[{extra}]" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr

"""The documentation cannot drift from the code (issue 15): the README is short and links every page of
docs/; every `aibackup ...` line in their shell code blocks (```sh and ```bash) is a real command line (it
parses, with every option, a group's subcommand and its options included); and the ones that can run offline
(no server, no S3 or KMS, no made-up bundle or key slot id) run, in document order, with the environment
variables the line sets, in a folder holding the stores they name, and succeed."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.helpers import Cli, chroma_client, seed_chroma

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: What keeps a command from running here: a server, S3 or KMS, a placeholder, or an id (a bundle's, a key
#: slot's) from another repository.
OFFLINE_NOT = re.compile(
    r"s3://|https?://|--kms-key-id|\.\.\.|<[a-z-]+>|\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}|key remove [0-9a-f]{8}\b"
)


@dataclass(frozen=True)
class Line:
    """One `aibackup` command line of a page: the variables it sets before the command, and its arguments."""

    env: dict[str, str]
    words: list[str]

    def offline(self) -> bool:
        return not OFFLINE_NOT.search(shlex.join([*(f"{k}={v}" for k, v in self.env.items()), *self.words]))


def commands(page: Path) -> list[Line]:
    """The `aibackup` command lines of a page's shell code blocks (```sh, ```bash; comments dropped)."""
    found = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        for text in block.splitlines():
            words = shlex.split(text, comments=True)
            env = {}
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            if words and words[0] == "aibackup":
                found.append(Line(env, words[1:]))
    return found


def test_every_command_line_is_in_a_block_that_is_read() -> None:
    """A page shows `aibackup` command lines only in the shell blocks `commands` reads (not ```text, ```)."""
    for page in PAGES:
        for fence, block in re.findall(r"```(\w*)\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            if re.search(r"^(?:[A-Z_]+=(?:'[^']*'|\S+) +)*aibackup ", block, flags=re.M):
                assert fence in ("sh", "bash"), (page.name, fence, block)


def test_the_readme_is_short_and_links_every_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert readme.startswith("# aibackup\n\n```sh\nmake demo") and "make test" in readme.splitlines()[4]
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, page.name
    for page in PAGES:  # and every relative link of every page leads somewhere
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).exists(), (page.name, link)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_parses(page: Path) -> None:
    from aibackup.cli import cli

    for line in commands(page):
        group: click.Group = cli
        name, *rest = line.words
        while True:
            command = group.get_command(None, name)  # type: ignore[arg-type]
            assert command is not None, (page.name, line.words)
            if not isinstance(command, click.Group):
                command.make_context(name, list(rest))  # an unknown option or a bad value raises
                break
            # A group (`key`): its verb comes next, and the verb's options are checked in turn.
            assert rest and not rest[0].startswith("-"), (page.name, line.words)
            group, name, rest = command, rest[0], rest[1:]


def workspace(folder: Path) -> None:
    """The stores the documentation names: ./data/chroma (collection docs), ./logs, ./data/ft with its
    job config, ./deploy, a model folder ./checkpoints/llama-ft, and an aibackup.yaml of them with a local
    repository."""
    seed_chroma(folder / "data" / "chroma", "docs", n=80, dim=8)
    (folder / "logs").mkdir()
    (folder / "logs" / "app.jsonl").write_text('{"user_id": "u1", "input": "hi", "output": "hello"}\n')
    (folder / "data" / "ft").mkdir(parents=True)
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    (folder / "data" / "ft" / "train.jsonl").write_text(json.dumps(chat) + "\n")
    with gzip.open(folder / "data" / "ft" / "eval.jsonl.gz", "wt") as f:
        f.write(json.dumps(chat) + "\n")
    for where in (folder / "job.yaml", folder / "data" / "ft" / "job.yaml"):
        where.write_text("base_model: tiny\nepochs: 2\n")
    (folder / "deploy").mkdir()
    (folder / "deploy" / "app.yaml").write_text("model: tiny\n")
    model = folder / "checkpoints" / "llama-ft"
    model.mkdir(parents=True)
    tensors = {"embed.weight": np.ones((64, 16), dtype=np.float16), "norm.weight": np.ones(16, dtype=np.float32)}
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (folder / "aibackup.yaml").write_text(
        "repository: ./aibackup-repo\n"
        "sources:\n"
        "  kb: {uri: 'chroma:./data/chroma', rpo: 24h, rto: 1h}\n"
        "  logs: {uri: 'conversations:./logs', rpo: 1h}\n"
        "targets:\n  scratch: {uri: 'qdrant:./restore-test/qdrant'}\n"
        "retention: {keep_daily: 7}\n"
        "restore_test: {target: scratch, report: ./reports/restore-test}\n"
    )


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(line.offline() for line in commands(p))], ids=lambda p: p.name
)
def test_the_offline_command_lines_run(page: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIBACKUP_REPO", raising=False)
    ran = 0
    for line in commands(page):
        if not line.offline():
            continue
        words = line.words
        if (
            words[0] in ("list", "show", "verify", "restore", "status", "prune", "copy")
            and not (tmp_path / "aibackup-repo").exists()
        ):
            cli("backup", "--json")  # a page that starts in an incident: the nightly backup ran before
        if words[0] == "key" and not (tmp_path / "aibackup-repo").exists():
            # A page about keys starts with the encrypted repository its first lines create (on S3 there).
            if not os.environ.get("AIBACKUP_KEY"):
                monkeypatch.setenv("AIBACKUP_KEY", "a long passphrase")
            assert cli("init", "--encrypt").code == 0
        with monkeypatch.context() as scoped:  # `VAR=value aibackup ...` sets VAR for that command only
            for name, value in line.env.items():
                scoped.setenv(name, value)
            result = cli(*words)
        assert result.code == 0, (page.name, words, result.out[-2000:], result.err)
        ran += 1
    assert ran


def test_a_bundle_reads_without_aibackup_as_the_format_page_shows(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The page reads an unencrypted repository's bundle (an encrypted one's parts need their key).
    monkeypatch.delenv("AIBACKUP_KEY", raising=False)
    workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli("backup", "chroma:./data/chroma").code == 0
    full, chained = re.findall(
        r"```python\n(.*?)```", (ROOT / "docs" / "bundle-format.md").read_text(encoding="utf-8"), flags=re.S
    )[:2]  # the engines' blocks after them run in tests/aibackup/test_engines.py
    namespace: dict[str, object] = {}
    exec(compile(full, "bundle-format.md", "exec"), namespace)
    assert namespace["table"].num_rows == 80  # type: ignore[attr-defined]
    # An incremental bundle: one record changed and one deleted since.
    collection = chroma_client(tmp_path / "data" / "chroma").get_collection("docs", embedding_function=None)
    got = collection.get(limit=2, include=["embeddings"])
    first, second = got["ids"]
    collection.update(ids=[first], embeddings=[got["embeddings"][0]], documents=["changed"])
    collection.delete(ids=[second])
    assert cli("backup", "chroma:./data/chroma").code == 0
    namespace = {}
    exec(compile(full + chained, "bundle-format.md", "exec"), namespace)
    assert namespace["table"].num_rows == 81 and namespace["live"].num_rows == 79  # type: ignore[attr-defined]
    live = namespace["live"].to_pydict()  # type: ignore[attr-defined]
    assert second not in live["id"] and live["document"][live["id"].index(first)] == "changed"

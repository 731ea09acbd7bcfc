"""The contract every file-kind connector passes (conversation logs in files or a SQLite table, fine-tuning
sets, configuration files), run through the command line as a user does. A subclass gives
``seed(tmp_path) -> source URI`` (a source with unicode, a blank line, compressed and nested files where
the kind has them), ``target(tmp_path) -> target URI``, ``same(source, target) -> bool`` (the target holds
exactly what the source held), and whether its targets take ``--mode merge``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tests.helpers import Cli, ok, one_line_error


class FileContract:
    merge: ClassVar[bool] = False
    kind: ClassVar[str] = ""

    def seed(self, tmp_path: Path) -> str:
        raise NotImplementedError

    def target(self, tmp_path: Path) -> str:
        raise NotImplementedError

    def same(self, tmp_path: Path) -> bool:
        raise NotImplementedError

    def missing(self, tmp_path: Path) -> str:
        """A source URI that names nothing."""
        return f"{self.kind}:{tmp_path / 'nothing-here'}"

    def backup(self, tmp_path: Path, cli: Cli) -> dict[str, Any]:
        result: dict[str, Any] = ok(
            cli("backup", self.seed(tmp_path), "--repo", str(tmp_path / "repo"), "--json")
        ).json()
        return result

    def restore(self, tmp_path: Path, cli: Cli, *args: str) -> Any:
        return cli(
            "restore", "latest", "--repo", str(tmp_path / "repo"), "--to", self.target(tmp_path), "--json", *args
        )

    # --- the contract ------------------------------------------------------------------------------------

    def test_one_dataset_named_after_the_source(self, tmp_path: Path, cli: Cli) -> None:
        backed_up = self.backup(tmp_path, cli)
        (dataset,) = backed_up["datasets"]
        assert dataset["kind"] == self.kind and dataset["rows"] > 0
        shown = ok(cli("show", "latest", "--repo", str(tmp_path / "repo"), "--json")).json()
        assert [d["name"] for d in shown["datasets"]] == [dataset["name"]]

    def test_backup_then_restore_gives_back_every_byte_and_proves_it(self, tmp_path: Path, cli: Cli) -> None:
        self.backup(tmp_path, cli)
        restored = ok(self.restore(tmp_path, cli)).json()
        assert restored["ok"] and all(c["ok"] for c in restored["datasets"][0]["checks"])
        assert self.same(tmp_path)
        again = ok(cli("backup", self.target(tmp_path), "--repo", str(tmp_path / "repo2"), "--json")).json()
        assert again["datasets"][0]["rows"] == restored["datasets"][0]["rows"]

    def test_a_missing_source_is_exit_2_naming_it(self, tmp_path: Path, cli: Cli) -> None:
        one_line_error(cli("backup", self.missing(tmp_path), "--repo", str(tmp_path / "repo")), 2, "nothing-here")
        assert not (tmp_path / "repo").exists()  # no repository is created for a backup that could not start

    def test_modes_create_refuses_overwrite_replaces(self, tmp_path: Path, cli: Cli) -> None:
        self.backup(tmp_path, cli)
        ok(self.restore(tmp_path, cli))
        one_line_error(self.restore(tmp_path, cli), 2)
        replaced = ok(self.restore(tmp_path, cli, "--mode", "overwrite")).json()
        assert replaced["ok"] and self.same(tmp_path)
        merged = self.restore(tmp_path, cli, "--mode", "merge")
        if self.merge:
            assert merged.code == 0 and merged.json()["ok"]
        else:
            one_line_error(merged, 2, "merge")

"""A chunk pack whose Parquet does not decode (a flipped byte in a page header or in its footer) is damage: pyarrow
reports it as a plain OSError without an errno, which had read as storage that cannot be read (exit 3, ``verify
--read-data`` stopping at the first such pack). A read that fails with an errno stays the storage's."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from aibackup.chunk_reader import undecodable
from aibackup.repository import Repository
from tests.helpers import Cli, manifest_json, ok, one_line_error


def flip_page_header_byte(repo: Path, pack: Path) -> None:
    """Flip the first byte of the page header of the first chunk's data (decrypted metadata in an encrypted
    repository, where the flipped header then does not decrypt)."""
    repository = Repository.open(str(repo))
    repository.use_key(repository.key())
    rel = pack.relative_to(repo).as_posix()
    with pack.open("rb") as f:
        meta = pq.ParquetFile(f, decryption_properties=repository.part_decryption(rel)).metadata
    column = meta.row_group(0).column(3)
    assert column.path_in_schema == "data"
    raw = bytearray(pack.read_bytes())
    raw[column.data_page_offset] ^= 0xFF
    pack.write_bytes(bytes(raw))


def flip_footer_start(pack: Path) -> None:
    """Flip the first byte of the pack's footer (the thrift of its FileMetaData, or of an encrypted footer's
    crypto metadata): a byte every reader decodes, where a byte further in may be one it skips."""
    raw = bytearray(pack.read_bytes())
    assert raw[-4:] in (b"PAR1", b"PARE")
    (length,) = struct.unpack("<I", raw[-8:-4])
    raw[len(raw) - 8 - length] ^= 0xFF
    pack.write_bytes(bytes(raw))


def model(folder: Path, rows: int) -> Path:
    """A model of its own: no chunk, not even its header's, is shared with another."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(rows)
    save_file({"w": rng.standard_normal((rows, 512)).astype(np.float32)}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("where", ["page header", "footer"])
def test_a_pack_that_does_not_decode_is_damage_named_by_verify_and_restore(
    tmp_path: Path, cli: Cli, where: str
) -> None:
    repo = tmp_path / "repo"
    ok(cli("backup", f"model:{model(tmp_path / 'a', 256)}", "--repo", str(repo)))
    ok(cli("backup", f"model:{model(tmp_path / 'b', 200)}", "--repo", str(repo)))
    first, second = Repository.open(str(repo)).bundle_ids()
    (pack,) = repo.glob(f"data/{first}/packs/*.parquet")
    flip_page_header_byte(repo, pack) if where == "page header" else flip_footer_start(pack)

    verified = cli("verify", "--read-data", "--repo", str(repo), "--json")
    assert verified.code == 1, (verified.code, verified.out, verified.err)
    report = verified.json()
    assert report["bundles"] == 2  # it went on past the damaged pack
    problems = report["problems"]
    assert problems and all(p["path"] == str(pack) and "damaged chunk pack" in p["problem"] for p in problems)
    assert all("model.safetensors bytes " in p["problem"] for p in problems)
    assert not any(str(pack) in p["problem"] for p in problems)  # named once, as the path

    out = tmp_path / "out"
    one_line_error(
        cli("restore", first, "--repo", str(repo), "--to", f"model:{out}"), 1, "damaged chunk pack", str(pack)
    )
    assert not out.exists()
    ok(cli("restore", second, "--repo", str(repo), "--to", f"model:{tmp_path / 'out-2'}"))
    assert manifest_json(repo, second)["datasets"][0]["name"] == "b"


def test_only_an_error_without_an_errno_from_bytes_already_read_is_damage() -> None:
    thrift = OSError("Couldn't deserialize thrift: TProtocolException: Invalid data")
    assert undecodable(thrift, in_place=True)
    assert not undecodable(thrift, in_place=False)  # streamed from the storage: it may be the storage's
    assert undecodable(OSError("Unexpected end of stream: Page was smaller (0) than expected (1)"), in_place=True)
    assert undecodable(OSError("Could not verify page checksum"), in_place=False)
    for code in (errno.EIO, errno.EACCES, errno.ECONNRESET):
        assert not undecodable(OSError(code, "the disk, a permission, the network"), in_place=True)


def test_chunks_no_index_lists_are_named_by_their_place_in_the_file(tmp_path: Path, cli: Cli) -> None:
    """Without the chunk index nothing says how long each chunk is: verify named empty byte ranges ("bytes
    0-0", "bytes 656-656"); it names the chunk's place among the file's chunks instead."""
    repo = tmp_path / "repo"
    ok(cli("backup", f"model:{model(tmp_path / 'm', 256)}", "--repo", str(repo)))
    for index in repo.glob("index/*.parquet"):
        index.unlink()
    verified = cli("verify", "--read-data", "--repo", str(repo), "--json")
    assert verified.code == 1
    problems = [p["problem"] for p in verified.json()["problems"]]
    assert problems and all("(model.safetensors, chunk " in p and " bytes " not in p for p in problems), problems

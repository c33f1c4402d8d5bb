"""A shard write that runs out of space: a clear error, no partial shard, and a re-run matches an uninterrupted one."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import ROOT

LIMIT = 400_000  # bytes per file: the small shards fit, the one of large images does not

INGEST = """
import sys
from pathlib import Path
from pipeline.config.ingest import IngestConfig
from pipeline.io.ingest import ingest
ingest([Path(sys.argv[1])], Path(sys.argv[2]), IngestConfig(shard_size=5, workers=int(sys.argv[3])), progress=False)
"""


def _inputs(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(15):
        side = 256 if 5 <= i < 10 else 32  # shard 1 holds five ~200 KB noise PNGs
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")


def _limit_file_size() -> None:
    # Over the limit a write fails with EFBIG instead of the process being killed by SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _ingest(src: Path, out: Path, workers: int = 1, limited: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", INGEST, str(src), str(out), str(workers)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_limit_file_size if limited else None,
        timeout=120,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_shard_write_out_of_space_fails_clearly_and_resumes_to_identical_outputs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _inputs(src)
    clean = _ingest(src, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert (tmp_path / "clean" / "shard-000001.tar").stat().st_size > LIMIT

    for workers in (1, 2):  # in-process and in worker processes
        out = tmp_path / f"out{workers}"
        res = _ingest(src, out, workers, limited=True)
        assert res.returncode != 0
        err = res.stderr.strip().splitlines()[-1]
        assert f"out of space writing shards in {out}" in err and "file-size limit" in err, err
        assert "shard-000001.tar" in err and "shards are left to write, about" in err and "bytes are free" in err, err
        # No partial shard: no temporary file, and the failed shard is not there to be read as complete.
        names = set(os.listdir(out))
        assert not [n for n in names if n.endswith(".tmp")], names
        assert "shard-000001.tar" not in names and "shard-000001.records.jsonl" not in names, names
        assert "records.jsonl" not in names

        res = _ingest(src, out, workers)
        assert res.returncode == 0, res.stderr[-2000:]
        assert _files(out) == _files(tmp_path / "clean")

"""Skip only what is truly complete: deleted ingest records and shards are redone; an ingest that
does not account for every listed input writes no manifest."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline.io.sources import iter_all
from pipeline.stages import ingest as ingest_stage
from tests.bad_inputs import encode, noise
from tests.e2e.test_stage_locks import snapshot


def _folder_recipe(root: Path) -> list[str]:
    for i in range(10):
        (root / "pool" / f"{i}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / "pool" / f"{i}.png").write_bytes(encode(Image.fromarray(noise(16, 16, seed=i)), "PNG"))
    for c in ("a", "b"):
        for i in range(4):
            (root / "labeled" / c).mkdir(parents=True, exist_ok=True)
            (root / "labeled" / c / f"{i}.png").write_bytes(
                encode(Image.fromarray(noise(16, 16, seed=100 + i + 10 * ord(c))), "PNG")
            )
    return [
        "data_recipe=folder",
        f"data_recipe.pool=[{root / 'pool'}]",
        f"data_recipe.labeled={root / 'labeled'}",
        "tracking=off",
        "ingest.workers=1",
        "ingest.shard_size=4",
    ]


def test_deleted_record_and_shard_are_redone_to_the_same_outputs(
    tmp_path: Path, compose_cfg: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_cfg(_folder_recipe(tmp_path / "in"), root=tmp_path / "out")
    ingest_stage.run(cfg)
    out = tmp_path / "out" / "my_domain"
    want = snapshot(out)
    recipe = json.loads((out / "recipe" / "manifest.json").read_text())
    assert recipe["counts"] == {"pool.inputs": 10, "eval.inputs": 8}

    pool = out / "ingest" / "pool"
    lines = (pool / "records.jsonl").read_text().splitlines(keepends=True)
    (pool / "records.jsonl").write_text("".join(lines[:-1]))
    (out / "ingest" / "eval" / "shard-000001.tar").unlink()
    with caplog.at_level(logging.INFO):
        ingest_stage.run(cfg)
    assert "ingest/pool: 1 output files in" in caplog.text and "records.jsonl (" in caplog.text
    assert "ingest/eval: 1 output files in" in caplog.text and "shard-000001.tar (missing)" in caplog.text
    assert "upstream changed" not in caplog.text  # the redone sources wrote the same manifests
    assert snapshot(out) == want

    caplog.clear()
    with caplog.at_level(logging.INFO):
        ingest_stage.run(cfg)
    assert caplog.text.count("match the config") == 4  # recipe, pool, eval, summary


def test_ingest_that_misses_an_input_writes_no_manifest(
    tmp_path: Path, compose_cfg: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a second run rewriting the recipe's folders did: a file vanishes between listing and ingest.
    cfg = compose_cfg(_folder_recipe(tmp_path / "in"), root=tmp_path / "out")
    real = ingest_stage.ingest

    def racing(
        specs: list[str], out_dir: Path, opts: object, labels: dict | None = None, progress: bool = True
    ) -> object:
        if out_dir.name == "pool":
            (tmp_path / "in" / "pool" / "3.png").unlink()
        return real(specs, out_dir, opts, labels=labels, progress=progress)

    monkeypatch.setattr(ingest_stage, "ingest", racing)
    with pytest.raises(RuntimeError, match=r"ingest/pool: .*no manifest written.*1 keys have no record: 3.png"):
        ingest_stage.run(cfg)
    assert not (tmp_path / "out" / "my_domain" / "ingest" / "pool" / "manifest.json").exists()
    # The next run sees the folder as it is now and completes.
    monkeypatch.setattr(ingest_stage, "ingest", real)
    m = ingest_stage.run(cfg)
    assert m.counts["pool.inputs"] == 9


def test_check_records_names_missing_repeated_and_foreign_keys(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a.png", "b.png", "c.png"):
        (src / n).write_bytes(b"x")
    refs = list(iter_all([src]))
    rec = tmp_path / "records.jsonl"
    rec.write_text("".join(json.dumps({"key": k}) + "\n" for k in ("a.png", "a.png", "z.png")))
    with pytest.raises(RuntimeError) as e:
        ingest_stage.check_records("pool", refs, rec, expected=4)
    msg = str(e.value)
    assert "the recipe listed 4 inputs, ingest found 3" in msg and "2 keys have no record: b.png, c.png" in msg
    assert "1 keys are not inputs: z.png" in msg and "1 keys have several records: a.png" in msg
    rec.write_text("".join(json.dumps({"key": k}) + "\n" for k in ("a.png", "b.png", "c.png")))
    ingest_stage.check_records("pool", refs, rec, expected=3)

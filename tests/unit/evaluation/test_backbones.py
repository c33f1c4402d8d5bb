import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.config.eval import BackboneEntryConfig
from pipeline.core.manifest import Manifest
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.features import cached, extract, feature_key, preprocessing


def _export(folder: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    m = timm.create_model("test_vit", num_classes=0, img_size=32)
    (folder / "export").mkdir(parents=True, exist_ok=True)
    save_file(m.state_dict(), str(folder / "export" / "model.safetensors"))
    cfg = {"architecture": "test_vit", "model_kwargs": {"img_size": 32}, "pretrained_cfg": {}}
    (folder / "export" / "config.json").write_text(json.dumps(cfg))
    Manifest(stage="pretrain", config_hash="x", artifacts={"export": "export"}).write(folder)


ENTRIES = [
    BackboneEntryConfig("domain", role="domain", weights="{root}/pretrain"),
    BackboneEntryConfig("random_init", arch="test_efficientnet", arch_from="domain"),
    BackboneEntryConfig("pixels", arch="raw_pixels", img_size=8),
]


def _entries(root: Path) -> list[BackboneEntryConfig]:
    return [
        BackboneEntryConfig(**{**e.__dict__, "weights": e.weights.format(root=root) if e.weights else None})
        for e in ENTRIES
    ]


def test_missing_pretrain_export_skips_domain_and_random_init_keeps_its_own_arch(tmp_path: Path) -> None:
    bbs, notes = resolve_backbones(_entries(tmp_path), seed=0)
    assert [b.name for b in bbs] == ["random_init", "pixels"]
    assert bbs[0].arch == "test_efficientnet"
    assert "pretrain stage has not run" in notes[0]


def test_export_found_through_the_stage_manifest_and_copied_by_arch_from(tmp_path: Path) -> None:
    _export(tmp_path / "pretrain", seed=5)
    bbs, notes = resolve_backbones(_entries(tmp_path), seed=0)
    assert not notes
    dom, rnd, pix = bbs
    assert dom.arch == rnd.arch == "test_vit" and dom.fingerprint.startswith("export:")
    assert rnd.fingerprint == "random:0" and pix.is_pixels
    # Random init of the same architecture, built with the export's kwargs (32 px ViT).
    assert rnd.build(0).patch_embed.img_size == (32, 32)
    sd_dom, sd_rnd = dom.build().state_dict(), rnd.build(0).state_dict()
    assert not torch.equal(sd_dom["pos_embed"], sd_rnd["pos_embed"])


def test_new_export_changes_the_feature_cache_key(tmp_path: Path) -> None:
    _export(tmp_path / "pretrain", seed=0)
    k0 = feature_key(resolve_backbones(_entries(tmp_path), 0)[0][0], "data", 0)
    _export(tmp_path / "pretrain", seed=1)
    k1 = feature_key(resolve_backbones(_entries(tmp_path), 0)[0][0], "data", 0)
    assert k0 != k1
    assert k1 != feature_key(resolve_backbones(_entries(tmp_path), 0)[0][0], "other-data", 0)


def test_bad_entries_raise_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        resolve_backbones([BackboneEntryConfig("a", arch="test_vit"), BackboneEntryConfig("a", arch="test_vit")], 0)
    with pytest.raises(ValueError, match=r"backbones\[gen\]"):
        resolve_backbones([BackboneEntryConfig("gen", arch="test_vit", weights=str(tmp_path / "nope.pt"))], 0)


def test_features_are_cached_and_vits_use_their_built_size_and_cls_plus_patch_mean(tmp_path: Path) -> None:
    _export(tmp_path / "pretrain")
    dom = resolve_backbones(_entries(tmp_path), 0)[0][0]
    assert preprocessing(dom.build(), None)["size"] == 32  # not timm's default 160 for test_vit
    imgs = [Image.fromarray(np.full((20, 20), i * 10, dtype=np.uint8)) for i in range(5)]
    f1 = extract(dom, imgs, tmp_path / "cache", "data")
    assert f1.shape == (5, 128) and len(list((tmp_path / "cache").glob("domain-*.npy"))) == 1
    calls = []
    f2, hit = cached(tmp_path / "cache", "domain", feature_key(dom, "data", 0), lambda: calls.append(1) or f1)
    assert hit and not calls
    np.testing.assert_array_equal(f1, f2)


def test_export_normalisation_is_used_for_it_and_its_random_init_twin(tmp_path: Path) -> None:
    _export(tmp_path / "pretrain")
    cfg_path = tmp_path / "pretrain" / "export" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["pretrained_cfg"] = {"mean": [0.3, 0.3, 0.3], "std": [0.2, 0.2, 0.2], "input_size": [3, 32, 32]}
    cfg_path.write_text(json.dumps(cfg))
    dom, rnd, _ = resolve_backbones(_entries(tmp_path), 0)[0]
    for b in (dom, rnd):
        prep = preprocessing(b.build(), None, b.preprocessing_overrides())
        assert prep["mean"] == [0.3, 0.3, 0.3] and prep["std"] == [0.2, 0.2, 0.2]

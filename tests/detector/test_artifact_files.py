"""An artifact's files as untrusted input: read once and used as checked, plain files only, bounded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from small_artifact import build_artifact

from detector.artifact import MANIFEST, WEIGHTS, _manifest_digest, read_artifact
from detector.errors import ArtifactError
from detector.model import Detector
from detector.registry import ModelRegistry
from detector.signing import SIGNATURE, generate_keys, load_private_key, load_public_key, sign_artifact


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return build_artifact(tmp_path / "model", seed=5)


def rewrite_manifest(artifact: Path, change: Any) -> None:
    """Edit the manifest and recompute its self-hash: only the content under test is wrong."""
    manifest = json.loads((artifact / MANIFEST).read_text(encoding="utf-8"))
    change(manifest)
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (artifact / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def scores(detector: Detector) -> list[float]:
    rows = [{f: 0.5 for f in detector.spec.numeric} | {f: "a" for f in detector.spec.categorical}]
    return detector.score_records(rows, top=0).scores.tolist()


def test_a_loaded_model_does_not_follow_later_edits_or_truncation_of_its_weights(artifact: Path) -> None:
    """The weights are copied into memory: a mapped file would let an in-place edit change what a
    running worker flags (signature and hashes checked long before), and a truncation kill it (SIGBUS)."""
    detector = Detector.load(artifact)
    before = scores(detector)
    weights = artifact / WEIGHTS
    with weights.open("r+b") as fh:  # in place: the same inode a mapping would see
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size // 2)
        fh.write(b"\x7f" * (size // 2))
    assert scores(detector) == before
    with weights.open("r+b") as fh:
        fh.truncate(16)
    assert scores(detector) == before


def test_the_manifest_bytes_checked_are_the_bytes_loaded(artifact: Path) -> None:
    """A manifest swapped between a signature check and the load cannot slip through."""
    original = json.loads((artifact / MANIFEST).read_text(encoding="utf-8"))

    def check_then_swap(raw: bytes) -> None:
        assert json.loads(raw) == original
        rewrite_manifest(artifact, lambda m: m["scorer"].update(threshold=1e9))

    manifest, _ = read_artifact(artifact, check_then_swap)
    assert manifest["scorer"]["threshold"] == original["scorer"]["threshold"]


def test_load_with_a_public_key_checks_the_signature(artifact: Path, tmp_path: Path) -> None:
    private, public = generate_keys()
    (tmp_path / "k").write_bytes(private)
    sign_artifact(artifact, load_private_key(tmp_path / "k"))
    key = load_public_key(public.decode())
    assert Detector.load(artifact, key).version
    (artifact / SIGNATURE).unlink()
    with pytest.raises(ArtifactError, match="unsigned model"):
        Detector.load(artifact, key)


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/weights.bin", ".hidden", ""])
def test_a_listed_file_name_must_be_a_plain_name_in_the_directory(artifact: Path, name: str) -> None:
    rewrite_manifest(artifact, lambda m: m["files"].update({name: "0" * 64}))
    with pytest.raises(ArtifactError, match="not a plain file name in the model directory"):
        Detector.load(artifact)


def test_links_and_special_files_are_refused(artifact: Path, tmp_path: Path) -> None:
    weights = artifact / WEIGHTS
    shutil.move(weights, tmp_path / "real.safetensors")
    weights.symlink_to(tmp_path / "real.safetensors")
    with pytest.raises(ArtifactError, match="a symbolic link"):
        Detector.load(artifact)
    weights.unlink()
    os.mkfifo(weights)  # opening it must not wait for a writer
    with pytest.raises(ArtifactError, match="not a regular file"):
        Detector.load(artifact)


def test_a_manifest_claiming_huge_layers_is_refused_before_building_them(artifact: Path) -> None:
    rewrite_manifest(artifact, lambda m: m["encoder"].update(hidden=[16000, 16000]))
    with pytest.raises(ArtifactError, match="encoder weights do not match the encoder config"):
        Detector.load(artifact)  # a shape-only encoder: no 1 GiB of parameters allocated first


def test_a_deeply_nested_manifest_is_an_artifact_error_and_a_listed_problem(tmp_path: Path, artifact: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    good = registry.add(artifact)
    deep = tmp_path / "registry" / "versions" / "deep"
    deep.mkdir()
    (deep / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match="nested too deeply"):
        Detector.load(deep)
    listed = {info.version: info.error for info in registry.versions()}
    assert listed == {good: None, "deep": "unreadable manifest: nested too deeply"}


def test_registry_add_copies_only_the_artifacts_own_files(artifact: Path, tmp_path: Path) -> None:
    """A received model folder holding a link to a private key (or any stray file): the registered
    copy holds the manifest and the listed files, nothing else, and no link was followed."""
    secret = tmp_path / "private.pem"
    secret.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    (artifact / "README.txt").symlink_to(secret)
    (artifact / "notes.txt").write_text("stray")
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.add(artifact)
    assert sorted(p.name for p in registry.version_path(version).iterdir()) == [MANIFEST, WEIGHTS]
    private, _ = generate_keys()
    (tmp_path / "k").write_bytes(private)
    signed = ModelRegistry(tmp_path / "signed").add(artifact, signing_key=load_private_key(tmp_path / "k"))
    copy = ModelRegistry(tmp_path / "signed").version_path(signed)
    assert sorted(p.name for p in copy.iterdir()) == sorted([SIGNATURE, MANIFEST, WEIGHTS])
    assert not any(p.is_symlink() for p in copy.iterdir())

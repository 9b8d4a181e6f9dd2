"""Ed25519 model signing: round trip, refusal of unsigned / wrongly signed / edited models, registry and worker."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from small_artifact import build_artifact

from detector.artifact import MANIFEST, _manifest_digest
from detector.errors import ArtifactError
from detector.registry import ModelRegistry
from detector.signing import (
    SIGNATURE,
    generate_keys,
    load_private_key,
    load_public_key,
    sign_artifact,
    verify_signature,
)
from training.cli.main import main
from worker.model_loading import load_live_model, load_model


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("ours", "theirs"):
        private, public = generate_keys()
        (root / f"{name}.key").write_bytes(private)
        (root / f"{name}.pub").write_bytes(public)
        out[name], out[f"{name}.pub"] = root / f"{name}.key", root / f"{name}.pub"
    return out


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return build_artifact(tmp_path / "model", seed=3, metadata={"calibration": {"target_fpr": 0.05}})


def test_round_trip_and_refusals(artifact: Path, keys: dict[str, Path]) -> None:
    public = load_public_key(str(keys["ours.pub"]))
    with pytest.raises(ArtifactError, match="unsigned model"):
        verify_signature(artifact, public)
    sign_artifact(artifact, load_private_key(keys["ours"]))
    verify_signature(artifact, public)
    verify_signature(artifact, load_public_key(keys["ours.pub"].read_text()))  # PEM text works too
    with pytest.raises(ArtifactError, match="signature does not verify"):
        verify_signature(artifact, load_public_key(str(keys["theirs.pub"])))


def test_an_edited_manifest_with_a_recomputed_self_hash_is_refused(artifact: Path, keys: dict[str, Path]) -> None:
    sign_artifact(artifact, load_private_key(keys["ours"]))
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["calibration"]["threshold"] = 1e9  # detection silently off
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (artifact / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    with pytest.raises(ArtifactError, match="signature does not verify"):
        verify_signature(artifact, load_public_key(str(keys["ours.pub"])))


def test_bad_keys_are_clear_errors_without_key_material(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(ArtifactError, match="not a readable PEM public key"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ArtifactError, match="not an Ed25519 key"):
        load_private_key(_rsa_private(tmp_path))
    with pytest.raises(ArtifactError) as caught:
        load_private_key(keys["ours.pub"])
    assert "BEGIN" not in str(caught.value)


def _rsa_private(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "rsa.key"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def test_registry_signs_on_add_and_verifies_on_promote(
    tmp_path: Path, artifact: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "registry"
    unsigned = build_artifact(tmp_path / "unsigned", seed=4, metadata={"calibration": {"target_fpr": 0.05}})
    pub = str(keys["ours.pub"])
    assert main(["registry", "add", str(artifact), "--registry", str(root), "--signing-key", str(keys["ours"])]) == 0
    assert not (artifact / SIGNATURE).exists()  # the source stays untouched; the registered copy is signed
    assert main(["registry", "add", str(unsigned), "--registry", str(root)]) == 0
    capsys.readouterr()
    assert len(ModelRegistry(root).versions()) == 2
    versions = {json.loads((p / MANIFEST).read_text())["model_version"]: p for p in (artifact, unsigned)}
    signed_version, unsigned_version = list(versions)
    assert (
        main(["registry", "promote", unsigned_version, "--registry", str(root), "--reason", "x", "--public-key", pub])
        == 1
    )
    err = capsys.readouterr().err
    assert "unsigned model" in err and "BEGIN" not in err
    assert (
        main(["registry", "promote", signed_version, "--registry", str(root), "--reason", "x", "--public-key", pub])
        == 0
    )
    assert load_live_model(root, load_public_key(pub)).detector.version == signed_version
    with pytest.raises(ArtifactError, match="signature does not verify"):
        load_live_model(root, load_public_key(str(keys["theirs.pub"])))
    with pytest.raises(ArtifactError, match="unsigned model"):
        load_model(unsigned, load_public_key(pub))
    assert load_model(unsigned).detector.version == unsigned_version  # no key configured: not required


def test_adding_a_registered_version_again_signed_is_refused_unless_the_signature_is_the_same(
    tmp_path: Path, artifact: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: it printed "added" and left the registered copy unsigned (or signed by the
    old key). A registered version is never changed, so it is a clear error instead."""
    root = str(tmp_path / "registry")
    ours, theirs = str(keys["ours"]), str(keys["theirs"])
    assert main(["registry", "add", str(artifact), "--registry", root]) == 0
    capsys.readouterr()
    assert main(["registry", "add", str(artifact), "--registry", root, "--signing-key", ours]) == 1
    assert "already registered unsigned" in capsys.readouterr().err
    signed_root = str(tmp_path / "signed")
    assert main(["registry", "add", str(artifact), "--registry", signed_root, "--signing-key", ours]) == 0
    assert main(["registry", "add", str(artifact), "--registry", signed_root, "--signing-key", ours]) == 0  # same
    assert main(["registry", "add", str(artifact), "--registry", signed_root]) == 0  # unsigned copy of the same
    capsys.readouterr()
    assert main(["registry", "add", str(artifact), "--registry", signed_root, "--signing-key", theirs]) == 1
    assert "with a signature by another key" in capsys.readouterr().err


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    private, public = tmp_path / "k", tmp_path / "k.pub"
    assert main(["registry", "keygen", "--private-key", str(private), "--public-key", str(public)]) == 0
    assert private.stat().st_mode & 0o777 == 0o600
    load_private_key(private)
    load_public_key(str(public))
    assert main(["registry", "keygen", "--private-key", str(private), "--public-key", str(public)]) == 1


def test_signed_copy_is_a_complete_artifact(tmp_path: Path, artifact: Path, keys: dict[str, Path]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    sign_artifact(copy, load_private_key(keys["ours"]))
    assert sorted(p.name for p in copy.iterdir()) == sorted([*(p.name for p in artifact.iterdir()), SIGNATURE])


def test_worker_setting_is_masked_when_shown(keys: dict[str, Path]) -> None:
    from worker.settings import effective_settings, load_settings  # noqa: PLC0415

    settings = load_settings({"model_dir": "/m", "model_public_key": keys["ours.pub"].read_text()})
    assert settings.model_public_key is not None
    assert "BEGIN" not in json.dumps(effective_settings(settings))


def test_hot_reload_refuses_an_unsigned_version_and_takes_a_signed_one(
    tmp_path: Path, keys: dict[str, Path], artifact: Path
) -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from worker.metrics import WorkerMetrics  # noqa: PLC0415
    from worker.reload import RegistryWatcher  # noqa: PLC0415

    root = tmp_path / "registry"
    registry = ModelRegistry(root)
    serving = registry.add(artifact, signing_key=load_private_key(keys["ours"]))
    registry.promote(serving, "signed")
    unsigned = registry.add(build_artifact(tmp_path / "u", seed=5, metadata={"calibration": {"target_fpr": 0.05}}))
    signed = registry.add(
        build_artifact(tmp_path / "s", seed=6, metadata={"calibration": {"target_fpr": 0.05}}),
        signing_key=load_private_key(keys["ours"]),
    )
    swapped: list[object] = []
    metrics = WorkerMetrics(CollectorRegistry())
    watcher = RegistryWatcher(
        root, serving, swapped.append, metrics, interval_s=1.0, public_key=load_public_key(str(keys["ours.pub"]))
    )
    registry.promote(unsigned, "by hand, unsigned")
    assert watcher.check_once() is None and swapped == [] and watcher.serving_version == serving
    registry.promote(signed, "signed")
    assert watcher.check_once() is not None and watcher.serving_version == signed


def test_an_empty_public_key_setting_says_so() -> None:
    with pytest.raises(ArtifactError, match="model public key: empty"):
        load_public_key("  ")


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_signature_that_is_not_a_plain_file_is_refused_without_hanging(
    artifact: Path, keys: dict[str, Path], kind: str
) -> None:
    """Found in review: a FIFO as ``manifest.sig`` hung the worker's reload thread (and start-up) for
    good; it is now read as every model file is (a plain file, not a link, of bounded size)."""
    sign_artifact(artifact, load_private_key(keys["ours"]))
    signature = artifact / SIGNATURE
    signed = signature.read_bytes()
    signature.unlink()
    if kind == "fifo":
        os.mkfifo(signature)
    else:
        (artifact.parent / "elsewhere.sig").write_bytes(signed)
        signature.symlink_to(artifact.parent / "elsewhere.sig")
    with pytest.raises(ArtifactError, match=r"not a regular file|symbolic link"):
        verify_signature(artifact, load_public_key(str(keys["ours.pub"])))

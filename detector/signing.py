"""Optional Ed25519 signatures on model artifacts (beyond the manifest's self-hash).

The self-hash and file hashes of ``manifest.json`` catch corruption, not tampering: anyone who
can write the registry can edit the manifest (say, the threshold) and recompute them. A signature
closes that: ``manifest.sig`` holds the base64 Ed25519 signature of the exact ``manifest.json``
bytes, which name the sha256 of every other file, so the signature covers the whole artifact.

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key), made with
``python -m training registry keygen`` or ``openssl genpkey -algorithm ed25519``. Key material is
never logged or put in an error message.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from detector.artifact_files import read_model_file
from detector.atomic_file import write_atomic
from detector.errors import ArtifactError

__all__ = [
    "SIGNATURE",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_keys",
    "load_private_key",
    "load_public_key",
    "sign_artifact",
    "verify_signature",
]

SIGNATURE = "manifest.sig"
#: A signature file's size at most (a base64 Ed25519 signature is 88 bytes).
SIGNATURE_LIMIT = 4096
MANIFEST = "manifest.json"
PEM_MARK = "-----BEGIN"


def generate_keys() -> tuple[bytes, bytes]:
    """A new ``(private_pem, public_pem)`` pair (the private key unencrypted: protect the file)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file.

    Raises:
        ArtifactError: unreadable, or not an unencrypted Ed25519 private key.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(
            f"signing key {path}: not a readable unencrypted PEM private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError(f"signing key {path}: not an Ed25519 key")
    return key


def load_public_key(value: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text or the path of a PEM file (``WORKER_MODEL_PUBLIC_KEY``).

    Raises:
        ArtifactError: unreadable, or not an Ed25519 public key.
    """
    if not value.strip():
        raise ArtifactError("model public key: empty (give PEM text or the path of a PEM file)")
    try:
        pem = value.encode("utf-8") if value.lstrip().startswith(PEM_MARK) else Path(value).read_bytes()
        key = serialization.load_pem_public_key(pem)
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"model public key: not a readable PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError("model public key: not an Ed25519 key")
    return key


def key_pair_matches(private: Ed25519PrivateKey, public: Ed25519PublicKey) -> bool:
    """Whether ``public`` is the public half of ``private`` (signatures it makes verify)."""
    raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return private.public_key().public_bytes(*raw) == public.public_bytes(*raw)


def sign_artifact(model_dir: Path, key: Ed25519PrivateKey) -> Path:
    """Write ``manifest.sig`` for the artifact's current ``manifest.json``; returns its path."""
    model_dir = Path(model_dir)
    signature = key.sign((model_dir / MANIFEST).read_bytes())
    path = model_dir / SIGNATURE
    write_atomic(path, base64.b64encode(signature) + b"\n")
    return path


def verify_signature(model_dir: Path, key: Ed25519PublicKey, manifest: bytes | None = None) -> None:
    """Check ``manifest.sig`` against ``manifest.json`` with ``key``.

    ``manifest``: the manifest's bytes as the caller read them (and will use them); read from the
    directory when ``None``. A loader passes its own read (see ``Detector.load``), so a manifest
    swapped between the check and the load cannot slip through.

    Raises:
        ArtifactError: unsigned, malformed signature, or a signature that does not verify (made
            with another key, or the manifest was changed after signing).
    """
    model_dir = Path(model_dir)
    try:
        # As every model file: a plain file, not a link, of bounded size (a FIFO here hung the
        # worker's reload thread for good; found in review).
        raw = read_model_file(model_dir / SIGNATURE, SIGNATURE_LIMIT)
    except FileNotFoundError:
        raise ArtifactError(
            f"{model_dir}: unsigned model (no {SIGNATURE}); a model public key is configured, so only signed "
            "models are accepted"
        ) from None
    try:
        signature = base64.b64decode(raw.strip(), validate=True)
        key.verify(signature, manifest if manifest is not None else read_model_file(model_dir / MANIFEST))
    except (binascii.Error, ValueError, InvalidSignature, OSError):
        raise ArtifactError(
            f"{model_dir}: signature does not verify (signed with another key, or the manifest was changed)"
        ) from None

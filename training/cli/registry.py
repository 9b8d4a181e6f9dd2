"""``python -m training registry ...``: list, show, add, promote and roll back registered models.

The training CLI wires these in::

    sub = parser.add_subparsers(dest="command", required=True)
    add_registry_commands(sub)
    ...
    args = parser.parse_args()
    if args.command == "registry":           # or: args.run_command(args)
        return run_registry_command(args)

Every subcommand takes ``--json``, and all but ``keygen`` take ``--registry DIR``; output goes to
stdout, a one-line ``error: ...`` message to stderr. Exit codes: :data:`EXIT_OK` and
:data:`EXIT_ERROR` (argparse itself exits with 2 on a usage error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.errors import ArtifactError, DetectorError, RegistryError, UsageError
from detector.model import Detector
from detector.registry import HistoryRecord, ModelRegistry, VersionInfo
from detector.schema import FeatureSpec
from detector.signing import (
    Ed25519PrivateKey,
    generate_keys,
    key_pair_matches,
    load_private_key,
    load_public_key,
    verify_signature,
)

EXIT_OK = 0
EXIT_ERROR = 1
LIVE_ALIAS = "live"
PUBLIC_KEY_ENV = "WORKER_MODEL_PUBLIC_KEY"
READ_ONLY = frozenset({"list", "show", "history"})
#: Subcommands that never create the registry: all but ``add`` (promote and roll-back need versions).
NEEDS_REGISTRY = READ_ONLY | {"promote", "rollback"}


def add_registry_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``registry`` command and its subcommands to a parser's subparsers.

    Sets ``run_command=run_registry_command`` as a default on the ``registry`` parser, and the
    chosen subcommand in ``args.registry_command``.

    Returns:
        the ``registry`` parser.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", required=True, type=Path, metavar="DIR", help="registry directory")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument(
        "--public-key",
        default=os.environ.get(PUBLIC_KEY_ENV) or None,
        metavar="PEM",
        help=f"accept only models signed for this Ed25519 public key (file or PEM; default: ${PUBLIC_KEY_ENV})",
    )
    registry = subparsers.add_parser("registry", help="list, show, add, promote and roll back model versions")
    registry.set_defaults(run_command=run_registry_command)
    sub = registry.add_subparsers(dest="registry_command", required=True, metavar="SUBCOMMAND")

    sub.add_parser("list", parents=[common], help="list registered versions (oldest first)")
    show = sub.add_parser("show", parents=[common], help="show one version")
    show.add_argument("version", help=f"a registered version, or {LIVE_ALIAS!r}")
    show.add_argument("--verify", action="store_true", help="load the artifact and verify its hashes")
    show.add_argument("--manifest", action="store_true", help="include the whole manifest (with --json)")
    add = sub.add_parser("add", parents=[common], help="verify a model directory and register it")
    add.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="model directory written by fit")
    add.add_argument("--promote", action="store_true", help="make it live right away")
    add.add_argument("--reason", default="registered and promoted by hand", help="history reason for --promote")
    add.add_argument("--actor", default=None, help="who promotes (default: the login name)")
    add.add_argument("--signing-key", type=Path, metavar="FILE", help="sign the registered copy (Ed25519 PEM)")
    keygen = sub.add_parser("keygen", help="write a new Ed25519 key pair for signing models")
    keygen.add_argument("--private-key", type=Path, required=True, metavar="FILE", help="written with mode 0600")
    keygen.add_argument("--public-key", type=Path, required=True, metavar="FILE", help="for WORKER_MODEL_PUBLIC_KEY")
    keygen.add_argument("--json", action="store_true", help="print the key paths as JSON instead of text")
    promote = sub.add_parser("promote", parents=[common], help="make a version live")
    promote.add_argument("version", help="a registered version")
    for parser in (promote, sub.add_parser("rollback", parents=[common], help="return to the previous live version")):
        parser.add_argument("--reason", required=True, help="why (kept in the history)")
        parser.add_argument("--actor", default=None, help="who (default: the login name)")
    history = sub.add_parser("history", parents=[common], help="promotions and roll-backs, oldest first")
    history.add_argument("--limit", type=int, default=None, metavar="N", help="only the last N records")
    return registry


def run_registry_command(args: argparse.Namespace) -> int:
    """Run the parsed ``registry`` subcommand; returns the exit code."""
    try:
        if args.registry_command == "keygen":
            _keygen(args)
            return EXIT_OK
        if args.registry_command in NEEDS_REGISTRY and not args.registry.is_dir():
            raise RegistryError(f"no registry at {args.registry} (not a directory)")
        public_key = load_public_key(args.public_key) if args.public_key else None
        registry = ModelRegistry(args.registry, public_key=public_key)
        handler = _HANDLERS[args.registry_command]
        handler(registry, args)
    except (DetectorError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _list(registry: ModelRegistry, args: argparse.Namespace) -> None:
    infos = registry.versions()
    if args.json:
        _print_json([info.as_dict() for info in infos])
        return
    if not infos:
        print("no versions registered")
        return
    rows = [
        ["*" if i.is_live else "", i.version, i.created_at or "?", _number(i.threshold), i.error or ""] for i in infos
    ]
    print(_table(["LIVE", "VERSION", "CREATED_AT", "THRESHOLD", "PROBLEM"], rows))


def _show(registry: ModelRegistry, args: argparse.Namespace) -> None:
    version = args.version
    if version == LIVE_ALIAS:
        version = registry.live_version()
        if version is None:
            raise RegistryError("no version is live yet")
    info = registry.show(version)
    if args.verify:
        registry.load_version(version)
    if args.json:
        out = info.as_dict(with_manifest=args.manifest)
        if args.verify:
            out["verified"] = True
        _print_json(out)
        return
    print(_describe(info, verified=args.verify))


def _keygen(args: argparse.Namespace) -> None:
    private, public = generate_keys()
    for path in (args.private_key, args.public_key):
        if path.exists():
            raise RegistryError(f"{path} exists; not overwriting a key")
    fd = os.open(args.private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    args.public_key.write_bytes(public)
    if args.json:
        _print_json({"private_key": str(args.private_key), "public_key": str(args.public_key)})
        return
    print(f"wrote private key {args.private_key} (keep it secret) and public key {args.public_key}")


def _add(registry: ModelRegistry, args: argparse.Namespace) -> None:
    signing_key = load_private_key(args.signing_key) if args.signing_key is not None else None
    if args.promote:
        _check_promotable(registry, Path(args.model_dir), signing_key)
    version = registry.add(args.model_dir, signing_key=signing_key)
    # Promotion verifies the registered copy, as `registry promote` does: what add checked may be
    # the source directory only (the version was registered before), and LIVE must never name a
    # copy that fails.
    record = registry.promote(version, args.reason, args.actor) if args.promote else None
    if args.json:
        _print_json({"version": version, "promotion": record.as_dict() if record else None})
        return
    print(f"added {version}")
    if record is not None:
        print(_moved(record))
        _warn_spec_change(registry, record)


def _check_promotable(registry: ModelRegistry, source: Path, signing_key: Ed25519PrivateKey | None) -> None:
    """With a public key, ``add --promote`` registers only a copy it can promote: a registered
    version is immutable, so a copy signed by another key (or unsigned) would stay unpromotable."""
    public_key = registry.public_key
    if public_key is None:
        return
    if signing_key is not None:
        if not key_pair_matches(signing_key, public_key):
            raise UsageError(
                "--signing-key does not match the model public key: the copy could never be promoted; "
                "nothing was registered"
            )
        return
    if registry.is_registered(Detector.load(source).version):
        return  # already registered: add returns that copy, and promote verifies its signature
    try:
        verify_signature(source, public_key)
    except ArtifactError as exc:
        raise UsageError(f"{exc}; give --signing-key with the matching private key (nothing was registered)") from exc


def _promote(registry: ModelRegistry, args: argparse.Namespace) -> None:
    record = registry.promote(args.version, args.reason, args.actor)
    _report_move(record, args.json)
    _warn_spec_change(registry, record)


def _rollback(registry: ModelRegistry, args: argparse.Namespace) -> None:
    record = registry.rollback(args.reason, args.actor)
    _report_move(record, args.json)
    _warn_spec_change(registry, record)


def _warn_spec_change(registry: ModelRegistry, record: HistoryRecord) -> None:
    """On stderr: what the live model's events now meet that they did not (workers log it too)."""
    if record.previous is None:
        return
    try:
        old, new = (
            FeatureSpec.model_validate(registry.show(v).manifest["spec"]) for v in (record.previous, record.version)
        )
    except (KeyError, ValueError, RegistryError):  # a manifest without a readable spec: nothing to compare
        return
    for change in new.changes_from(old):
        print(f"warning: the live model's event spec changed ({change})", file=sys.stderr)


def _history(registry: ModelRegistry, args: argparse.Namespace) -> None:
    records = registry.history()
    if args.limit is not None:
        records = records[-args.limit :] if args.limit > 0 else []
    if args.json:
        _print_json([r.as_dict() for r in records])
        return
    if not records:
        print("no promotions yet")
        return
    rows = [[r.at, r.action, r.version, r.previous or "-", r.actor, r.reason] for r in records]
    print(_table(["AT", "ACTION", "VERSION", "PREVIOUS", "ACTOR", "REASON"], rows))


_HANDLERS = {
    "list": _list,
    "show": _show,
    "add": _add,
    "promote": _promote,
    "rollback": _rollback,
    "history": _history,
}


def _report_move(record: HistoryRecord, as_json: bool) -> None:
    if as_json:
        _print_json(record.as_dict())
    else:
        print(_moved(record))


def _moved(record: HistoryRecord) -> str:
    verb = "rolled back to" if record.action == "rollback" else "promoted"
    return f"{verb} {record.version} (previous: {record.previous or 'none'})"


def _describe(info: VersionInfo, *, verified: bool) -> str:
    lines = [
        f"version:    {info.version}",
        f"live:       {'yes' if info.is_live else 'no'}",
        f"created_at: {info.created_at or '?'}",
        f"threshold:  {_number(info.threshold)}",
        f"path:       {info.path}",
    ]
    if info.error:
        lines.append(f"problem:    {info.error}")
    if verified:
        lines.append("verified:   ok")
    lines += [f"{key}: {value}" for key, value in info.metrics.items()]
    return "\n".join(lines)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in (headers, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:.6g}"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

"""A small kustomize for the subset deploy/kubernetes uses, for machines without ``kubectl``.

Supported ``kustomization.yaml`` fields: ``resources`` (files and directories), ``namespace``,
``labels`` (``pairs`` only: metadata labels, never selectors or templates), ``images`` (``name``,
``newName``, ``newTag``) and ``patches`` given by ``path`` (strategic-merge patches that name their
target by kind and metadata.name). Anything else raises ``UnsupportedKustomizationError`` rather
than render something kustomize would not. When ``kubectl`` is present the tests check that this
rendering equals ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
SUPPORTED = frozenset({"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"})
CLUSTER_SCOPED = frozenset(
    {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
)
BUILTIN_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2")
# Strategic-merge keys of the built-in list fields we patch (from the Kubernetes API types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


class UnsupportedKustomizationError(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def render(directory: Path) -> list[Doc]:
    """The resources ``kustomize build directory`` would output (in no particular order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise UnsupportedKustomizationError(f"{directory}: unsupported fields {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs.extend(render(path) if path.is_dir() else _load(path))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedKustomizationError(f"{directory}: only path patches are supported: {patch}")
        for patch_doc in _load(directory / patch["path"]):
            _apply_patch(docs, patch_doc)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for label_set in kustomization.get("labels", []):
        if set(label_set) != {"pairs"}:
            raise UnsupportedKustomizationError(f"{directory}: labels support only pairs: {label_set}")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for image in kustomization.get("images", []):
        for doc in docs:
            _set_images(doc, image)
    return docs


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _apply_patch(docs: list[Doc], patch: Doc) -> None:
    targets = [d for d in docs if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]]
    if len(targets) != 1:
        raise UnsupportedKustomizationError(f"patch {patch['kind']}/{patch['metadata']['name']} matches {len(targets)}")
    builtin = patch["apiVersion"] in BUILTIN_GROUPS
    merged = _merge(targets[0], {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}, builtin)
    targets[0].clear()
    targets[0].update(merged)


def _merge(base: Any, patch: Any, builtin: bool, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _merge(base[key], value, builtin, key) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        if not builtin:
            raise UnsupportedKustomizationError(f"list field {field!r} in a custom resource patch")
        key = MERGE_KEYS.get(field)
        if key is None:
            return copy.deepcopy(patch)
        by_key = {item[key]: item for item in base}
        added = [copy.deepcopy(item) for item in patch if item[key] not in by_key]
        patched = {item[key]: item for item in patch}
        kept = [_merge(item, patched[item[key]], builtin) if item[key] in patched else item for item in base]
        # kustomize (kyaml) puts patch-only items before the existing ones.
        return added + kept
    return copy.deepcopy(patch)


def _set_images(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    container["image"] = _new_image(container["image"], image)
            else:
                _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def _new_image(current: str, image: dict[str, str]) -> str:
    name, _, tag = current.partition(":")
    if name != image["name"]:
        return current
    return f"{image.get('newName', name)}:{image.get('newTag', tag)}"

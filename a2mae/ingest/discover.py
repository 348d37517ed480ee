"""Find the scenes under the sources given to ``a2mae ingest`` (listing only, no raster is opened).

A scene is either a **single raster file** (a multi-band GeoTIFF, say) or a **group of per-band files**
in one folder, as archives deliver them (Sentinel-2 ``B04.tif``/``T33UUP_..._B04_10m.jp2``, Landsat
``LC08_..._SR_B4.TIF``). Files are grouped by the prefix left when the band name at the end of the
file stem is removed (:func:`a2mae.sensors.detect.split_band_token`); a group of two or more files is
a per-band scene. In a folder holding a per-band scene, rasters without a band name (previews,
true-colour images, aerosol layers) are auxiliary and ignored. Sidecars (``.json``, ``.txt``,
``.xml``) belong to the scene of their folder, or, when the folder holds several scenes, to the
scene whose prefix (or file stem) they start with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from a2mae.ingest.errors import IngestError as IngestError  # re-exported
from a2mae.io.storage import BadEntry, FileInfo, S3Settings, is_s3, list_files
from a2mae.sensors.detect import split_band_token

RASTER_EXTENSIONS = (".tif", ".tiff", ".jp2")
SIDECAR_EXTENSIONS = (".json", ".txt", ".xml")


@dataclass
class SceneSpec:
    """A scene found by discovery: its files, before any of them is opened."""

    source: str
    rasters: list[FileInfo]
    tokens: dict[str, str] = field(default_factory=dict)  # raster URI -> band token in its name
    sidecars: list[FileInfo] = field(default_factory=list)

    @property
    def single_file(self) -> bool:
        """Whether the scene is one raster file."""
        return len(self.rasters) == 1

    @property
    def files(self) -> list[FileInfo]:
        """Rasters and sidecars, sorted by name."""
        return sorted([*self.rasters, *self.sidecars], key=lambda f: f.name)


@dataclass
class Discovery:
    """Scenes found under the sources, and the auxiliary files that were ignored."""

    scenes: list[SceneSpec]
    ignored: list[str]
    bad: list[BadEntry] = field(default_factory=list)  # unreadable entries: never opened


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _stem(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def discover(
    sources: Sequence[str], vocabulary: Iterable[str], settings: S3Settings | None = None
) -> Discovery:
    """List every source and split its files into scenes.

    Args:
        sources: Local files, local folders or ``s3://`` prefixes.
        vocabulary: Upper-case band names to look for at the end of file stems.
        settings: S3 settings for ``s3://`` sources.

    Returns:
        The scenes (sorted by source, duplicates across sources removed), the ignored files, and the
        raster or sidecar entries of folders that are not regular files (broken links, named pipes)
        or cannot be read, and the sub-folders that cannot be listed: they are left out of the scenes
        and returned as ``bad`` for the caller to refuse or skip.

    Raises:
        IngestError: A source is missing, is a non-raster file, or holds no raster.
        StorageError: A source is not a regular file or folder, or cannot be listed (S3 unreachable
            or forbidden); :class:`~a2mae.io.storage.StorageOSError` when the OS refuses it.
    """
    vocab = frozenset(vocabulary)
    scenes: dict[str, SceneSpec] = {}
    ignored: list[str] = []
    bad: list[BadEntry] = []
    for src in sources:
        unreadable: list[BadEntry] = []
        files = list_files(src, settings, bad=unreadable)
        kept = [b for b in unreadable if b.folder or _ext(b.path) in RASTER_EXTENSIONS + SIDECAR_EXTENSIONS]
        bad.extend(kept)
        text = str(src).rstrip("/")
        is_file = bool(files) and (files[0].uri == text if is_s3(text) else Path(text).expanduser().is_file())
        if len(files) == 1 and is_file and _ext(files[0].name) not in RASTER_EXTENSIONS:
            raise IngestError(
                f"{src}: not a raster file (expected {', '.join(RASTER_EXTENSIONS)}); "
                "give a GeoTIFF, a folder of per-band files or an s3:// prefix"
            )
        found, skipped = _split(files, vocab)
        if not found and not kept:
            raise IngestError(
                f"{src}: no raster files ({', '.join(RASTER_EXTENSIONS)}) found; check the path or prefix"
            )
        for spec in found:
            scenes.setdefault(spec.source, spec)
        ignored.extend(skipped)
    return Discovery(sorted(scenes.values(), key=lambda s: s.source), sorted(set(ignored)), bad)


def _split(files: Sequence[FileInfo], vocab: frozenset[str]) -> tuple[list[SceneSpec], list[str]]:
    by_folder: dict[str, list[FileInfo]] = defaultdict(list)
    for f in files:
        by_folder[f.parent].append(f)
    scenes: list[SceneSpec] = []
    ignored: list[str] = []
    for folder, infos in sorted(by_folder.items()):
        rasters = [f for f in infos if _ext(f.name) in RASTER_EXTENSIONS]
        sidecars = [f for f in infos if _ext(f.name) in SIDECAR_EXTENSIONS]
        groups: dict[str, list[tuple[FileInfo, str]]] = defaultdict(list)
        loose: list[FileInfo] = []
        for f in rasters:
            split = split_band_token(_stem(f.name), vocab)
            if split is None:
                loose.append(f)
            else:
                groups[split[0]].append((f, split[1]))
        multi = {p: g for p, g in groups.items() if len(g) >= 2}
        singles = [g[0] for p, g in groups.items() if len(g) < 2]
        found: list[SceneSpec] = []
        for prefix, members in sorted(multi.items()):
            found.append(
                SceneSpec(
                    source=folder if prefix == "" else f"{folder}/{prefix}*",
                    rasters=sorted((f for f, _ in members), key=lambda f: f.name),
                    tokens={f.uri: token for f, token in members},
                )
            )
        if multi:
            ignored.extend(f.uri for f in loose)
            loose = []
        for f, token in singles:
            found.append(SceneSpec(source=f.uri, rasters=[f], tokens={f.uri: token}))
        found.extend(SceneSpec(source=f.uri, rasters=[f]) for f in loose)
        if len(found) == 1:
            found[0].sidecars = sidecars
            if multi:
                found[0].source = folder
        else:
            for spec in found:
                key = _stem(spec.rasters[0].name) if spec.single_file else spec.source.rsplit("/", 1)[-1][:-1]
                spec.sidecars = [s for s in sidecars if key and s.name.startswith(key)]
        scenes.extend(found)
    return scenes, ignored

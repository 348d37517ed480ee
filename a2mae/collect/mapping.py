"""STAC items -> scene catalog rows, driven by one YAML file per collection (data, not code).

A collection file (``a2mae/collect/collections/<name>.yaml``, or any path) names the registry sensor and
product of the collection's items, the asset key(s) of each registry band and of the QA layer, the
platforms taken, where the cloud cover is, and where an asset's URL is. From an item, the row takes:

* **grids** from the projection extension: ``proj:epsg`` (or ``proj:code``, ``proj:wkt2``,
  ``proj:projjson``), ``proj:transform`` and ``proj:shape`` of each asset (or of the item);
* **radiometry** from ``raster:bands`` (``scale``/``offset`` of the first reflectance asset, as ingest
  reads a STAC sidecar; ``nodata`` and ``data_type`` per asset), else the file's ``offset_rule``, else
  the registry product;
* **time** from ``datetime`` (or ``start_datetime``), the period by ingest's growth rule at the scene
  centre, the cloud fraction from the cloud-cover property;
* **band files** whose URIs are the assets' hrefs (``https://`` or ``s3://``): ``a2mae tile`` reads
  only the chip windows from them.

Geometry (corners, footprint, pixel sizes, CRS string) is computed by the same functions as ingest, so
a row built from an item equals, field for field that matters to tiling, the row ingest makes from the
same files (the tests check this).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from a2mae.collect.errors import CollectError as CollectError  # re-exported
from a2mae.config import GrowthPeriodConfig
from a2mae.errors import A2maeError
from a2mae.ingest.catalog import BandFile, SceneRecord
from a2mae.ingest.period import growth_period
from a2mae.ingest.scene_geometry import crs_string, pixel_size_m, wgs84_geometry
from a2mae.ingest.sidecars import datetime_from_stac, scale_offset_from_stac
from a2mae.io.yamlsafe import YamlError, load_file
from a2mae.sensors.registry import Product, Sensor, SensorRegistry

if TYPE_CHECKING:
    from rasterio.crs import CRS

#: Folder of the built-in collection files.
BUILTIN_DIR = Path(__file__).with_name("collections")


class OffsetRule(BaseModel):
    """An offset that applies from a version property on (e.g. Sentinel-2 processing baseline 04.00)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    property: str = Field(description="Item property holding a dotted version, e.g. s2:processing_baseline.")
    at_least: str = Field(description="The offset applies when the property's version is at least this.")
    offset: float = Field(description="Reflectance offset from that version on.")

    def applies(self, props: Mapping[str, Any]) -> bool:
        """Whether the item's version property is at least :attr:`at_least`."""
        value = props.get(self.property)
        if value is None:
            return False
        return _version(str(value)) >= _version(self.at_least)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


class CollectionMap(BaseModel):
    """How the items of one STAC collection map onto the sensor registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection: str = Field(min_length=1, description="Collection id at the STAC API.")
    sensor: str = Field(description="Registry sensor id.")
    product: str = Field(description="Registry product level of the items.")
    platforms: tuple[str, ...] = Field(default=(), description="Item `platform` values taken (empty: any).")
    bands: dict[str, tuple[str, ...]] = Field(
        description="Registry band id -> asset keys, first present wins."
    )
    qa: tuple[str, ...] = Field(default=(), description="Asset keys of the QA layer, first present wins.")
    cloud_cover: str = Field(default="eo:cloud_cover", description="Item property: cloud cover, percent.")
    href: tuple[str, ...] = Field(default=("href",), description="Dotted keys of an asset's URL.")
    dtype: str = Field(default="uint16", description="Pixel type when raster:bands does not say.")
    offset_rule: OffsetRule | None = None
    source: str = Field(default="", description="The file this mapping was read from.")

    def check(self, registry: SensorRegistry) -> None:
        """Refuse sensors, products and bands the registry does not know.

        Raises:
            CollectError: One line naming the file and the unknown id.
        """
        where = self.source or self.collection
        try:
            sensor = registry.get(self.sensor)
            sensor.product(self.product)
        except A2maeError as err:
            raise CollectError(f"{where}: {err}") from None
        unknown = [b for b in self.bands if b not in sensor.bands]
        if unknown:
            raise CollectError(
                f"{where}: bands {unknown} are not bands of {self.sensor} in the sensor registry"
            )


def load_mapping(name: str, registry: SensorRegistry) -> CollectionMap:
    """Read a collection file: a built-in name (``sentinel-2-l2a``) or a path to a YAML file.

    Raises:
        CollectError: Missing, malformed, or naming unknown registry ids.
    """
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = BUILTIN_DIR / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")))
            raise CollectError(
                f"collect.collections: no collection file {name!r} (built in: {known}); "
                "give a path to a YAML file"
            )
    try:
        doc = load_file(path)
    except YamlError as err:
        raise CollectError(str(err)) from None
    if not isinstance(doc, dict):
        raise CollectError(f"{path}: expected a mapping (collection, sensor, product, bands, ...)")
    try:
        cmap = CollectionMap.model_validate({**doc, "source": str(path)})
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CollectError(f"{path}: {loc}: {first['msg']}") from None
    cmap.check(registry)
    return cmap


# ---------------------------------------------------------------------------------------- item -> row
def _lookup(asset: Mapping[str, Any], dotted: str) -> Any:
    node: Any = asset
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _crs(item: Mapping[str, Any], asset: Mapping[str, Any]) -> CRS:
    from rasterio.crs import CRS

    props = item.get("properties") or {}
    for src in (asset, props):
        if src.get("proj:epsg") is not None:
            return CRS.from_epsg(int(src["proj:epsg"]))
        if src.get("proj:code"):
            return CRS.from_user_input(str(src["proj:code"]))
        if src.get("proj:wkt2"):
            return CRS.from_wkt(str(src["proj:wkt2"]))
        if src.get("proj:projjson"):
            return CRS.from_user_input(json.dumps(src["proj:projjson"]))
    return None


def _grid(item: Mapping[str, Any], key: str, asset: Mapping[str, Any]) -> tuple[Any, Any, int, int]:
    """``(crs, affine transform, width, height)`` of an asset from the projection extension.

    Raises:
        CollectError: The item does not say (the message names the missing properties).
    """
    from affine import Affine

    props = item.get("properties") or {}
    crs = _crs(item, asset)
    transform = asset.get("proj:transform") or props.get("proj:transform")
    shape = asset.get("proj:shape") or props.get("proj:shape")
    if crs is None or transform is None or shape is None or len(transform) < 6 or len(shape) != 2:
        raise CollectError(
            f"item {item.get('id')}: asset {key!r} lacks proj:epsg/proj:code, proj:transform or proj:shape "
            "(the projection extension); such a catalog cannot be collected: "
            "download the scenes and ingest them"
        )
    return crs, Affine(*[float(v) for v in transform[:6]]), int(shape[1]), int(shape[0])


def _raster_band(asset: Mapping[str, Any]) -> Mapping[str, Any]:
    bands = asset.get("raster:bands") or []
    return bands[0] if bands and isinstance(bands[0], Mapping) else {}


def _assets(
    item: Mapping[str, Any], cmap: CollectionMap
) -> tuple[dict[str, tuple[str, Mapping[str, Any]]], tuple[str, Mapping[str, Any]] | None]:
    """``({band: (asset key, asset)}, (qa key, qa asset) or None)`` of the mapped assets present."""
    assets = item.get("assets") or {}
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for band, keys in cmap.bands.items():
        key = next((k for k in keys if isinstance(assets.get(k), Mapping)), None)
        if key is not None:
            found[band] = (key, assets[key])
    qa_key = next((k for k in cmap.qa if isinstance(assets.get(k), Mapping)), None)
    return found, ((qa_key, assets[qa_key]) if qa_key else None)


def _href(item: Mapping[str, Any], key: str, asset: Mapping[str, Any], cmap: CollectionMap) -> str:
    for dotted in cmap.href:
        value = _lookup(asset, dotted)
        if isinstance(value, str) and value:
            if not value.startswith(("s3://", "http://", "https://")):
                raise CollectError(
                    f"item {item.get('id')}: asset {key!r} href {value!r} is not an s3:// or http(s):// URL"
                )
            return value
    raise CollectError(f"item {item.get('id')}: asset {key!r} has none of {list(cmap.href)}")


def _band_file(
    item: Mapping[str, Any], band: str, key: str, asset: Mapping[str, Any], cmap: CollectionMap, nodata: Any
) -> tuple[BandFile, Any]:
    """A band's :class:`BandFile` and its CRS (``nodata``: used when raster:bands gives none)."""
    crs, t, width, height = _grid(item, key, asset)
    rb = _raster_band(asset)
    bf = BandFile(
        band=band,
        uri=_href(item, key, asset, cmap),
        index=1,
        gsd_m=round(pixel_size_m(crs, t, width, height), 6),
        width=width,
        height=height,
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        dtype=str(rb.get("data_type") or cmap.dtype),
        nodata=float(rb["nodata"]) if rb.get("nodata") is not None else nodata,
    )
    return bf, crs


def item_content_hash(item: Mapping[str, Any]) -> str:
    """sha256 of what makes an item's pixels and metadata: id, collection, properties, asset URLs.

    Keys the open-file cache of tiling and the scene id; a re-processed item (new ``updated``, new
    checksum or href) hashes differently.
    """
    assets = {
        k: {f: a.get(f) for f in ("href", "file:checksum", "file:size") if a.get(f) is not None}
        for k, a in sorted((item.get("assets") or {}).items())
        if isinstance(a, Mapping)
    }
    doc = {
        "id": item.get("id"),
        "collection": item.get("collection"),
        "properties": item.get("properties") or {},
        "assets": assets,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _reflectance(item: Mapping[str, Any], cmap: CollectionMap, product: Product) -> tuple[float, float]:
    """Scale and offset: raster:bands, else the collection's offset rule, else the registry product."""
    got = scale_offset_from_stac(item)
    if got is not None:
        return got
    props = item.get("properties") or {}
    if cmap.offset_rule is not None and cmap.offset_rule.applies(props):
        return product.scale, cmap.offset_rule.offset
    return product.scale, product.offset


def check_item(item: Mapping[str, Any], cmap: CollectionMap) -> None:
    """Refuse an item of another platform than the collection file takes.

    Raises:
        CollectError: Its ``platform`` is not one of ``cmap.platforms``.
    """
    platform = str((item.get("properties") or {}).get("platform") or "").lower()
    if cmap.platforms and platform not in {p.lower() for p in cmap.platforms}:
        raise CollectError(
            f"item {item.get('id')}: platform {platform or '(none)'!r} is not one of {list(cmap.platforms)} "
            f"({cmap.source or cmap.collection})"
        )


def item_record(
    item: Mapping[str, Any],
    cmap: CollectionMap,
    registry: SensorRegistry,
    growth: GrowthPeriodConfig,
    source: str | None = None,
    roi_geojson: str | None = None,
) -> SceneRecord:
    """The catalog row of one STAC item.

    Args:
        item: The item (a GeoJSON Feature mapping).
        cmap: Its collection's mapping.
        registry: The sensor registry.
        growth: The growth-period rule (``params.data.growth_period``).
        source: What the row's ``source`` says (default: the item's self link, else
            ``stac:<collection>/<id>``).
        roi_geojson: Where the scene is to be tiled (None: wherever a chip fits).

    Returns:
        The row; band URIs are the assets' hrefs.

    Raises:
        CollectError: The item lacks what a row needs (one line naming the item and the asset).
    """
    check_item(item, cmap)
    sensor = registry.get(cmap.sensor)
    product = sensor.product(cmap.product)
    bands, qa = _assets(item, cmap)
    if not bands:
        raise CollectError(
            f"item {item.get('id')}: none of the band assets of {cmap.source or cmap.collection} is present "
            f"(assets: {sorted(item.get('assets') or {})})"
        )
    files = {
        band: _band_file(item, band, key, asset, cmap, product.nodata) for band, (key, asset) in bands.items()
    }
    ordered = sorted(files, key=lambda b: _order(sensor, b))
    ref_band = min(ordered, key=lambda b: (round(files[b][0].gsd_m, 6), _order(sensor, b)))
    ref, crs = files[ref_band]
    qa_file = None
    if qa is not None and product.qa is not None:
        qa_file, _ = _band_file(item, product.qa.band, qa[0], qa[1], cmap, None)
    return _record(
        item,
        cmap,
        sensor,
        product,
        [files[b][0] for b in ordered],
        qa_file,
        ref,
        crs,
        growth,
        source,
        roi_geojson,
    )


def _order(sensor: Sensor, band: str) -> int:
    names = list(sensor.bands)
    return names.index(band) if band in names else len(names)


def _record(
    item: Mapping[str, Any],
    cmap: CollectionMap,
    sensor: Sensor,
    product: Product,
    band_files: list[BandFile],
    qa_file: BandFile | None,
    ref: BandFile,
    crs: Any,
    growth: GrowthPeriodConfig,
    source: str | None,
    roi_geojson: str | None,
) -> SceneRecord:
    """Assemble the row: time and period, geometry of the finest grid, cloud, radiometry, ids."""
    from affine import Affine

    when = datetime_from_stac(item)
    t = Affine(*ref.transform)
    corners, footprint, (clat, _) = wgs84_geometry(crs, t, ref.width, ref.height)
    period = growth_period(when, clat, growth.growth_months, growth.tropics_lat)
    scale, offset = _reflectance(item, cmap, product)
    cover = (item.get("properties") or {}).get(cmap.cloud_cover)
    content = item_content_hash(item)
    date = when.strftime("%Y%m%d") if when else "nodate"
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(ref.height, ref.width, t)
    return SceneRecord(
        scene_id=f"{sensor.id}_{cmap.product}_{date}_{content[:8]}",
        sensor=sensor.id,
        product=cmap.product,
        source=source
        or _self_link(item)
        or f"stac:{item.get('collection') or cmap.collection}/{item.get('id')}",
        datetime=when,
        datetime_source="stac" if when else "none",
        period=period,
        crs=crs_string(crs),
        transform=ref.transform,
        width=ref.width,
        height=ref.height,
        gsd_m=ref.gsd_m,
        bounds=(west, south, east, north),
        corners=corners,
        footprint_wkt=footprint,
        bands=tuple(b.band for b in band_files),
        band_files=tuple(band_files),
        qa_file=qa_file,
        cloud_fraction=min(max(float(cover) / 100.0, 0.0), 1.0) if cover is not None else None,
        scale=float(scale),
        offset=float(offset),
        content_hash=content,
        fingerprint=None,
        roi_geojson=roi_geojson,
    )


def _self_link(item: Mapping[str, Any]) -> str | None:
    for link in item.get("links") or []:
        if isinstance(link, Mapping) and link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    return None

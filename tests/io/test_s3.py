"""S3 through a real SeaweedFS store: storage helpers, GDAL /vsis3/, ingest of s3:// prefixes, bad cases."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat

import pytest

from a2mae.cli import main
from a2mae.config import load_params
from a2mae.ingest.catalog import read_catalog
from a2mae.ingest.run import IngestError, ingest
from a2mae.io.raster import open_raster, raster_env
from a2mae.io.storage import (
    StorageError,
    content_md5,
    file_info,
    list_files,
    put_file,
    put_tree,
    read_bytes,
)
from a2mae.samples import sample_path

pytestmark = pytest.mark.s3

DEFAULT_WEED_PORTS = {8333, 9333, 9340, 8888, 23646, 18333, 19333, 19340, 18888, 33646, 8181, 9101, 7333}


@pytest.fixture(scope="module")
def uploaded(s3_store):
    """The two bundled samples uploaded under a prefix of a fresh bucket: {name: s3 URI}."""
    bucket = s3_store.new_bucket("a2mae-ingest")
    out = {}
    for name in ("s2_l2a", "l8_c2l2"):
        uri = f"{bucket}/samples/{sample_path(name).name}"
        put_tree(sample_path(name), uri, s3_store.settings())
        out[name] = uri
    return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_uris(record) -> dict:
    d = record.model_dump(mode="json", exclude={"source", "fingerprint", "files"})  # files: where and when
    for bf in d["band_files"]:
        bf.pop("uri")
    if d["qa_file"]:
        d["qa_file"].pop("uri")
    return d


# ------------------------------------------------------------------------------------------ service
def test_store_is_on_free_loopback_ports_with_private_credentials(s3_store):
    server = s3_store.server
    assert server.is_running() and server.is_healthy()
    ports = set(server.ports.values())
    assert len(ports) == len(server.ports) == 5
    assert not (ports | {p + 10000 for p in ports}) & DEFAULT_WEED_PORTS
    assert s3_store.endpoint_url == f"http://127.0.0.1:{server.s3_port}"
    assert stat.S_IMODE(os.stat(server.config_path).st_mode) == 0o600
    assert json.loads(server.config_path.read_text())["identities"][0]["credentials"][0]["accessKey"]
    assert server.log_path.is_file()
    assert os.environ["AWS_ENDPOINT_URL"] == s3_store.endpoint_url  # the fixture points clients at it


def test_storage_helpers_round_trip(s3_store, tmp_path):
    settings = s3_store.settings()
    local = tmp_path / "hello.txt"
    local.write_bytes(b"hello s3")
    uri = f"{s3_store.uri}/helpers/a/hello.txt"
    put_file(local, uri, settings)
    assert read_bytes(uri, settings) == b"hello s3"
    info = file_info(uri, settings)
    assert info.size == 8 and info.name == "hello.txt"
    assert content_md5(info, settings) == hashlib.md5(b"hello s3").hexdigest()
    assert [f.uri for f in list_files(f"{s3_store.uri}/helpers", settings)] == [uri]
    # the same helpers work on local paths
    copy = tmp_path / "sub" / "copy.txt"
    put_file(local, str(copy))
    assert copy.read_bytes() == b"hello s3"
    assert content_md5(file_info(str(copy))) == info.etag


def test_gdal_reads_s3_in_a_scoped_env(s3_store, uploaded):
    uri = f"{uploaded['s2_l2a']}/B04.tif"
    with raster_env(s3_store.settings()), open_raster(uri) as ds:
        assert (ds.width, ds.height, ds.crs.to_epsg()) == (1098, 1098, 32629)
    with open_raster(uri, s3_store.settings()) as ds:  # no active env: one is entered for the file
        assert ds.count == 1


# -------------------------------------------------------------------------------------------- ingest
def test_ingest_s3_prefix_gives_the_local_records(s3_store, uploaded, tmp_path):
    params = load_params()
    local = ingest([str(sample_path("s2_l2a")), str(sample_path("l8_c2l2"))], tmp_path / "l.parquet", params)
    prefix = uploaded["s2_l2a"].rsplit("/", 1)[0]  # .../samples: both scenes
    remote = ingest([prefix], tmp_path / "r.parquet", params, progress=False)
    assert not remote.failed
    assert [r.source for r in remote.added] == [uploaded["l8_c2l2"], uploaded["s2_l2a"]]
    for r in remote.added:
        assert all(bf.uri.startswith("s3://") for bf in r.band_files)
    assert [_without_uris(r) for r in remote.added] == [_without_uris(r) for r in local.added]
    assert len(read_catalog(tmp_path / "r.parquet")) == 2


def test_reingest_s3_skips_by_listing(s3_store, uploaded, tmp_path, monkeypatch):
    cat = tmp_path / "r.parquet"
    ingest([uploaded["l8_c2l2"]], cat, load_params(), progress=False)
    before = cat.read_bytes()

    def boom(*a, **k):
        raise AssertionError("must not read")

    monkeypatch.setattr("a2mae.ingest.run.read_scene", boom)
    report = ingest([uploaded["l8_c2l2"]], cat, load_params(), progress=False)
    assert report.added == [] and len(report.skipped) == 1
    assert cat.read_bytes() == before


def test_cli_ingest_of_s3_prefix(s3_store, uploaded, tmp_path, capsys):
    cat = tmp_path / "cli.parquet"
    code = main(["ingest", uploaded["s2_l2a"], "--catalog", str(cat), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "S2_L2A_20200219_" in out and out.strip().endswith(
        f"1 added, 0 already in the catalog, 0 failed -> {cat}"
    )


# --------------------------------------------------------------------------------------- bad cases
def _one_line(capsys, *args) -> tuple[int, str]:
    code = main(["ingest", *args, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return code, err[0]


def test_unreachable_endpoint(tmp_path, capsys, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    cat = tmp_path / "c.parquet"
    code, line = _one_line(capsys, "s3://some-bucket/scenes", "--catalog", str(cat))
    assert code == 2
    assert "s3://some-bucket/scenes" in line and f"127.0.0.1:{port}" in line and "cannot reach" in line
    assert not cat.exists()


def test_forbidden_wrong_credentials(s3_store, uploaded, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    cat = tmp_path / "c.parquet"
    code, line = _one_line(capsys, uploaded["s2_l2a"], "--catalog", str(cat))
    assert code == 2
    assert uploaded["s2_l2a"] in line and "access denied (403)" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert not cat.exists()


def test_missing_bucket(s3_store, tmp_path, capsys):
    code, line = _one_line(capsys, "s3://a2mae-no-such-bucket/x", "--catalog", str(tmp_path / "c.parquet"))
    assert code == 2 and "s3://a2mae-no-such-bucket/x" in line and "no such bucket" in line


def test_empty_prefix(s3_store, tmp_path, capsys):
    code, line = _one_line(capsys, f"{s3_store.uri}/nothing-here", "--catalog", str(tmp_path / "c.parquet"))
    assert code == 2 and "no raster files" in line


def test_settings_resolution_env_wins_over_params(monkeypatch):
    params = load_params(overrides=["data.s3.endpoint_url=http://10.0.0.1:9000", "data.s3.region=eu-west-1"])
    for var in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_NO_SIGN_REQUEST"):
        monkeypatch.delenv(var, raising=False)
    s = params.data.s3.settings()
    assert (s.endpoint_url, s.region) == ("http://10.0.0.1:9000", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    s = params.data.s3.settings()
    assert s.endpoint_url == "http://127.0.0.1:1234"
    assert "very-secret" not in repr(s)


def test_storage_error_is_one_line(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(StorageError) as info:
        list_files("s3://bucket/prefix")
    assert "\n" not in str(info.value)


def test_single_object_is_a_scene(s3_store, uploaded, tmp_path):
    obj = f"{uploaded['s2_l2a']}/B04.tif"
    with pytest.raises(IngestError, match=r"B04.tif: ambiguous scene"):  # one S2 band alone: L1C or L2A?
        ingest([obj], tmp_path / "one.parquet", load_params(), progress=False)


def test_skip_bad_goes_on_past_an_unreachable_source(tmp_path, capsys, monkeypatch):
    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    cat = tmp_path / "c.parquet"
    sources = ["s3://bucket/scenes", str(sample_path("s2_l2a"))]
    code = main(["ingest", *sources, "--catalog", str(cat), "--skip-bad", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.strip().endswith(f"1 added, 0 already in the catalog, 1 failed -> {cat}")
    assert f"skipped bad input: s3://bucket/scenes: cannot reach the S3 endpoint {dead}" in err
    assert len(read_catalog(cat)) == 1


def test_fixed_port_in_use_is_refused(tmp_path):
    from a2mae.services import SeaweedFS, ServiceError, free_port_pair

    port = free_port_pair()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        store = SeaweedFS(tmp_path / "sw", s3_port=port)
        with pytest.raises(ServiceError, match=f"port {port}"):
            store.start(timeout=5)
        assert not store.is_running()


def test_an_object_replaced_after_ingest_is_refused_by_tile(s3_store, tmp_path, capsys):
    """Issue 21 item 2 on S3: the ETag recorded at ingest no longer matches (one line, exit 2)."""
    import numpy as np

    from a2mae.testing.rasters import GF2_NAME, write_scene

    rng = np.random.default_rng(2)
    local = write_scene(tmp_path / GF2_NAME, (0.02 + rng.random((4, 40, 40)) * 0.5).astype(np.float32))
    uri = f"{s3_store.new_bucket('a2mae-replaced')}/s/{GF2_NAME}"
    put_file(local, uri, s3_store.settings())
    cat = tmp_path / "c.parquet"
    assert main(["ingest", uri, "--catalog", str(cat), "--no-progress"]) == 0
    write_scene(local, (0.02 + rng.random((4, 40, 40)) * 0.5).astype(np.float32))
    put_file(local, uri, s3_store.settings())  # new pixels under the same key
    capsys.readouterr()
    tile = ["tile", "--catalog", str(cat), "--out", str(tmp_path / "o"), "--set", "tile.chip_size=16"]
    code = main([*tile, "--set", "tile.grid_m=20", "--set", "tile.workers=1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert uri in err and "changed since it was ingested (its ETag changed" in err

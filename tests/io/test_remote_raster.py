"""Remote rasters: GDAL paths, one-line errors for assets that are gone, denied or unreachable."""

from __future__ import annotations

import numpy as np
import pytest

from a2mae.io.raster import RemoteReadError, describe_open_error, is_remote, open_raster, to_gdal_path
from a2mae.io.storage import S3Settings


def test_gdal_paths_of_remote_and_local_rasters():
    own = S3Settings(endpoint_url="http://127.0.0.1:8333")
    assert to_gdal_path("s3://b/k/B04.tif") == "/vsis3/b/k/B04.tif"
    assert to_gdal_path("https://host/b/B04.tif") == "/vsicurl/https://host/b/B04.tif"
    assert to_gdal_path("http://127.0.0.1:8333/b/k.tif", own) == "/vsis3/b/k.tif"  # our store: signed
    assert to_gdal_path("http://127.0.0.1:8334/b/k.tif", own) == "/vsicurl/http://127.0.0.1:8334/b/k.tif"
    assert to_gdal_path("/data/B04.tif") == "/data/B04.tif"
    assert is_remote("s3://b/k") and is_remote("https://h/k") and not is_remote("/tmp/k")


@pytest.mark.parametrize(
    ("gdal", "expected"),
    [
        ("HTTP response code: 404", "not found (HTTP 404)"),
        ("HTTP response code: 403 - Access Denied", "access denied (403)"),
        ("Couldn't connect to server", "cannot reach the server after retries"),
        (
            "'/vsicurl/https://h/x.tif' not recognized as a supported file format.",
            "not a raster GDAL can read",
        ),
    ],
)
def test_remote_open_errors_say_what_to_do(gdal, expected):
    line = describe_open_error(RuntimeError(gdal), remote=True)
    assert line.startswith(expected) and "--skip-bad" in line


def test_an_unreachable_url_is_one_line():
    with (
        pytest.raises(RemoteReadError) as err,
        open_raster("http://127.0.0.1:9/nothing/B04.tif", S3Settings(anonymous=True)),
    ):
        pass
    line = str(err.value)
    assert (
        line.startswith("http://127.0.0.1:9/nothing/B04.tif: ") and "\n" not in line and "--skip-bad" in line
    )


@pytest.mark.s3
def test_remote_windows_and_a_missing_object(s3_store, tmp_path, geotiff):
    from rasterio.windows import Window

    from a2mae.io.storage import put_file
    from a2mae.testing.stac import write_cog

    data = np.arange(300 * 300, dtype=np.uint16).reshape(1, 300, 300)
    write_cog(tmp_path / "a.tif", data, "EPSG:32633", (10, 0, 500000, 0, -10, 4200000), 0)
    uri = f"{s3_store.uri}/remote/a.tif"
    put_file(tmp_path / "a.tif", uri, s3_store.settings())
    with open_raster(uri, s3_store.settings()) as ds:
        assert np.array_equal(ds.read(1, window=Window(260, 10, 20, 5)), data[0, 10:15, 260:280])
    public = f"s3://{s3_store.PUBLIC_BUCKET}/remote/a.tif"
    put_file(tmp_path / "a.tif", public, s3_store.settings())
    url = f"{s3_store.endpoint_url.replace('127.0.0.1', 'localhost')}/{s3_store.PUBLIC_BUCKET}/remote/a.tif"
    with open_raster(url, S3Settings(anonymous=True)) as ds:  # unsigned /vsicurl/
        assert np.array_equal(ds.read(1, window=Window(0, 290, 7, 10)), data[0, 290:300, 0:7])
    with (
        pytest.raises(RemoteReadError) as err,
        open_raster(f"{s3_store.uri}/remote/gone.tif", s3_store.settings()),
    ):
        pass
    assert "not found (HTTP 404)" in str(err.value) and "gone.tif" in str(err.value)

"""I/O helpers: atomic writes, fsspec/s3fs storage, rasterio/GDAL environment for S3."""

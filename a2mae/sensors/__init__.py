"""Sensor registry: bands, wavelengths, GSDs, spectral groups and product radiometry, loaded from YAML.

The built-in registry is ``builtin.yaml`` beside this file. Users add sensors without touching code by
writing a YAML file of the same shape (see ``docs/sensors.md``) and listing it in ``params.yaml``
(``data.sensor_files``) or in ``$A2MAE_SENSOR_FILES`` (``os.pathsep``-separated). A user file may add a
sensor or replace a built-in one as a whole.
"""

from __future__ import annotations

from a2mae.sensors.registry import (
    Band,
    BitField,
    Product,
    QASpec,
    Sensor,
    SensorRegistry,
    SensorRegistryError,
    get_registry,
    load_registry,
)

__all__ = [
    "Band",
    "BitField",
    "Product",
    "QASpec",
    "Sensor",
    "SensorRegistry",
    "SensorRegistryError",
    "get_registry",
    "load_registry",
]

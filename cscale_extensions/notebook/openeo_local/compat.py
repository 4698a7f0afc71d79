"""Two narrow fixes that make openeo-processes-dask's ``load_stac`` work on this platform.

Both wrap upstream functions (they implement no openEO process) and are installed once by
:func:`install`; each names the upstream behaviour it works around, so it can go when that is
fixed.

1. **STAC schemas offline.** ``load_stac`` first validates the URL with stac-validator, which
   downloads the JSON schemas of STAC and of every extension the document lists. Where
   ``schemas.stacspec.org`` / ``stac-extensions.github.io`` cannot be reached (air-gapped sites,
   this CI), every URL is then "not a valid STAC". Here a schema that cannot be fetched comes
   from pystac's bundled copy (STAC 1.1.0 core, GeoJSON) or, failing that, is skipped with a
   warning naming it: the document's type is still detected and its core still validated when
   a local copy exists. Unreachable hosts are remembered, so nothing waits on them twice.
2. **One asset set per load.** ``load_stac`` takes the no-data value and data type from ALL
   assets of the found items, whichever bands were asked for, and picks one at random when they
   differ (Landsat's reflectance bands are int16 / -9999, its QA band uint8 / 255): the load
   fails or masks with the wrong value. Here the items are reduced to the requested bands before
   ``load_stac`` looks at them, so bands that share a type load correctly together (load the
   QA band in its own ``load_stac``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

_installed = False
_lock = threading.Lock()
_bands: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("bands", default=None)
_unreachable: set[str] = set()
_skipped: set[str] = set()


def _local_schema(url: str) -> dict[str, Any] | None:
    """pystac's bundled copy of a schema URL (STAC 1.1.0 core, GeoJSON), if it has one."""
    import pystac

    root = Path(pystac.__file__).parent / "validation" / "jsonschemas"
    name = url.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if url.startswith("https://schemas.stacspec.org/v1.1.0/"):
        path = root / "stac-spec" / "v1.1.0" / name
    elif url.startswith("https://geojson.org/schema/"):
        path = root / "geojson" / name
    else:
        return None
    return json.loads(path.read_text()) if path.is_file() else None


def _schema_fetcher(original):
    def fetch(input_path: str, headers: dict | None = None):
        if not input_path.startswith(("http://", "https://")):
            return original(input_path, headers)
        host = urlparse(input_path).netloc
        if host not in _unreachable:
            try:
                return original(input_path, headers)
            except Exception as exc:  # noqa: BLE001 - any transport failure: fall back below
                if not _is_schema_host(host):
                    raise
                _unreachable.add(host)
                log.info("STAC schemas: %s unreachable (%s)", host, type(exc).__name__)
        if not _is_schema_host(host):
            return original(input_path, headers)
        local = _local_schema(input_path)
        if local is not None:
            return local
        if not _skipped:
            log.warning(
                "STAC schemas cannot be fetched from %s: documents are checked against the "
                "bundled STAC 1.1.0 core schemas only (extensions not validated)",
                host,
            )
        if input_path not in _skipped:
            _skipped.add(input_path)
            log.info("STAC schema %s unreachable and not bundled: not validated", input_path)
        return {}

    fetch.cscale_wrapped = True  # type: ignore[attr-defined]
    return fetch


def _is_schema_host(host: str) -> bool:
    return host in {
        "schemas.stacspec.org",
        "stac-extensions.github.io",
        "geojson.org",
        "cdn.staclint.com",
        "json-schema.org",
    }


def _restricted_modifier(inner):
    """A pystac-client modifier that keeps only the requested bands' assets of every item."""

    def modify(obj: Any) -> None:
        if inner is not None:
            inner(obj)
        bands = _bands.get()
        if not bands:
            return
        if isinstance(obj, dict):  # a result page, as pystac-client hands it over
            features = obj.get("features") if "features" in obj else [obj]
            for feature in features or []:
                assets = feature.get("assets")
                if isinstance(assets, dict) and set(bands) <= set(assets):
                    feature["assets"] = {k: v for k, v in assets.items() if k in bands}
            return
        for item in getattr(obj, "items", None) or [obj]:
            assets = getattr(item, "assets", None)
            if isinstance(assets, dict) and set(bands) <= set(assets):
                item.assets = {k: v for k, v in assets.items() if k in bands}

    return modify


class _ClientProxy:
    """Stands for ``pystac_client.Client`` inside openeo-processes-dask's load module."""

    def __init__(self, client_cls):
        self._cls = client_cls

    def open(self, url: str, *args: Any, modifier=None, **kwargs: Any):
        return self._cls.open(url, *args, modifier=_restricted_modifier(modifier), **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cls, name)


class _PystacClientProxy:
    def __init__(self, module):
        self._module = module
        self.Client = _ClientProxy(module.Client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _with_bands(load_stac):
    def load_stac_bands(*args: Any, **kwargs: Any):
        bands = kwargs.get("bands")
        token = _bands.set([bands] if isinstance(bands, str) else list(bands or []))
        try:
            return load_stac(*args, **kwargs)
        finally:
            _bands.reset(token)

    load_stac_bands.__name__ = load_stac.__name__
    load_stac_bands.__doc__ = load_stac.__doc__
    load_stac_bands.cscale_wrapped = True  # type: ignore[attr-defined]
    return load_stac_bands


class _DropOptionalMl(logging.Filter):
    """openeo-processes-dask announces at import that its optional ML processes are absent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "machine learning processes" not in record.getMessage()


def _quiet_known_noise() -> None:
    logging.getLogger("openeo_processes_dask.process_implementations").addFilter(_DropOptionalMl())
    # the process-graph parser turns every date into a naive numpy datetime64 and warns each time
    warnings.filterwarnings(
        "ignore",
        message="no explicit representation of timezones",
        category=UserWarning,
        module="openeo_pg_parser_networkx",
    )


def install() -> None:
    """Install both fixes (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _quiet_known_noise()
        from openeo.local import connection, processing
        from openeo_pg_parser_networkx.process_registry import Process
        from openeo_processes_dask.process_implementations.cubes import load
        from stac_validator import utilities

        if not getattr(utilities.fetch_and_parse_file, "cscale_wrapped", False):
            utilities.fetch_and_parse_file = _schema_fetcher(utilities.fetch_and_parse_file)
            utilities._fetch_and_parse_schema_cache_clear()
        load.pystac_client = _PystacClientProxy(load.pystac_client)
        wrapped = _with_bands(load.load_stac)
        connection.load_stac = wrapped
        registry = processing.PROCESS_REGISTRY
        current = registry["load_stac"]
        registry["load_stac"] = Process(spec=current.spec, implementation=wrapped)
        _installed = True

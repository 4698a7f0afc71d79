"""EO-MQS: one STAC API over the whole federation of C-SCALE sites (see docs/eomqs.md)."""

from cscale_extensions.services.eomqs.service import (
    SERVICE_NAME,
    add_eomqs_parser,
    build_app,
    run,
    service_spec,
)

__all__ = ["SERVICE_NAME", "add_eomqs_parser", "build_app", "run", "service_spec"]

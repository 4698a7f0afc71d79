"""EO-MQS: one STAC API over the whole federation of C-SCALE sites (see docs/eomqs.md).

The package imports nothing itself: the hub imports only
:mod:`~cscale_extensions.services.eomqs.registration`; the service is
:mod:`~cscale_extensions.services.eomqs.service` (``python -m cscale_extensions.services.eomqs``).
"""

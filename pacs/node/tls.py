"""TLS contexts of the node (Python's ssl): one for the SCP, one for sending to the destination."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_ssl_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """TLS for the SCP: our certificate; with `ca`, callers must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca) if ca else None)
    context.load_cert_chain(str(cert), str(key))
    if ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """TLS for the SCU: the destination's certificate checked against `ca`; ours presented when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context

"""Command line of the DICOM node.

    python -m pacs.node --port 11112 --ae-title TRIAGE --destination ARCHIVE@host:port --spool DIR
                        [--stable-seconds 10] [--allow AE_TITLE ...] [--models DIR] [--heatmaps]
                        [--tls-cert PEM --tls-key PEM [--tls-ca PEM]]

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad usage, 5 model repository unusable, 6 spool unusable,
8 cannot listen on the port.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from classifiers.logs import configure_logging
from pacs.models import ModelsUnusable, load_pipeline
from pacs.node.scp import ScpSettings, start_scp
from pacs.node.sender import Destination
from pacs.node.spool import Spool
from pacs.node.tls import client_ssl_context, server_ssl_context

if TYPE_CHECKING:
    from pacs.node.service import NodeSettings

logger = logging.getLogger("pacs.node")

EXIT_DONE, EXIT_USAGE, EXIT_MODELS, EXIT_SPOOL, EXIT_LISTEN = 0, 2, 5, 6, 8
LOG_LEVELS = ("debug", "info", "warning")


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGTERM or SIGINT; returns the exit code."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if bool(arguments.tls_cert) != bool(arguments.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    configure_logging(arguments.log_level)  # libraries (highdicom, pynetdicom: UIDs) only at debug
    try:
        spool = Spool(arguments.spool)
    except OSError as error:
        return _fail(EXIT_SPOOL, f"cannot use the spool {arguments.spool}: {error.strerror}; check its permissions")
    try:
        pipeline = load_pipeline(arguments.models)
    except ModelsUnusable as error:
        return _fail(EXIT_MODELS, str(error))
    from pacs.node.service import Node

    node = Node(pipeline, spool, _node_settings(arguments))
    try:
        server = start_scp(_scp_settings(arguments), arguments.host, arguments.port, node.receive)
    except OSError as error:
        pipeline.close()
        return _fail(EXIT_LISTEN, f"cannot listen on {arguments.host}:{arguments.port}: {error.strerror}")
    logger.info("DICOM node %s listening on %s:%d%s, results to %s", arguments.ae_title, arguments.host,
                arguments.port, " (TLS)" if arguments.tls_cert else "", arguments.destination)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: node.stop())
    try:
        node.serve()
    finally:
        server.shutdown()
        pipeline.close()
    logger.info("DICOM node stopped")
    return EXIT_DONE


def _scp_settings(arguments: argparse.Namespace) -> ScpSettings:
    context = None
    if arguments.tls_cert:
        context = server_ssl_context(arguments.tls_cert, arguments.tls_key, arguments.tls_ca)
    return ScpSettings(arguments.ae_title, tuple(arguments.allow), arguments.max_associations, arguments.max_pdu,
                       arguments.timeout_seconds, context)


def _node_settings(arguments: argparse.Namespace) -> NodeSettings:
    from pacs.node.service import NodeSettings

    context = None
    if arguments.tls_cert:
        context = client_ssl_context(arguments.tls_cert, arguments.tls_key, arguments.tls_ca)
    return NodeSettings(arguments.ae_title, arguments.destination, arguments.stable_seconds,
                        arguments.retry_seconds, arguments.max_retry_seconds, arguments.retention_days * 86400.0,
                        context, arguments.timeout_seconds, arguments.heatmaps)


def _fail(code: int, message: str) -> int:
    print(f"pacs.node: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The node's options (docs/PACS.md, "As a DICOM node")."""
    parser = argparse.ArgumentParser(prog="python -m pacs.node", description="A DICOM node: receives studies by"
                                     " C-STORE, scores each complete study, sends its SR by C-STORE.")
    parser.add_argument("--port", type=int, required=True, help="DICOM port to listen on (e.g. 11112)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--ae-title", required=True, type=_ae_title, help="this node's AE title (e.g. TRIAGE)")
    parser.add_argument("--destination", required=True, type=_destination, help="where SRs go: AE_TITLE@host:port")
    parser.add_argument("--spool", required=True, type=Path, help="spool folder (created 0700; holds patient data)")
    parser.add_argument("--stable-seconds", type=_positive, default=10.0,
                        help="a study is complete after this long without an instance (default 10)")
    parser.add_argument("--allow", nargs="+", type=_ae_title, default=[], metavar="AE_TITLE",
                        help="only these calling AE titles may associate (default: any)")
    parser.add_argument("--heatmaps", action="store_true",
                        help="also send each view's heatmap as a DICOM Secondary Capture")
    parser.add_argument("--models", type=Path, default=Path("h5"), help="model repository (default h5/)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate: DICOM over TLS, in and out")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA: callers and the destination must present a"
                        " certificate it signed")
    parser.add_argument("--max-associations", type=int, default=10, help="simultaneous associations (default 10)")
    parser.add_argument("--max-pdu", type=int, default=65536, help="maximum PDU size received (default 65536)")
    parser.add_argument("--timeout-seconds", type=_positive, default=60.0, help="network/ACSE/DIMSE timeout")
    parser.add_argument("--retry-seconds", type=_positive, default=5.0, help="first retry of a failed send")
    parser.add_argument("--max-retry-seconds", type=_positive, default=300.0, help="longest wait between retries")
    parser.add_argument("--retention-days", type=_positive, default=30.0,
                        help="how long a finished study's state (UIDs only) is kept (default 30)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="debug adds the libraries' own log (pynetdicom's protocol, highdicom: UIDs)")
    return parser


def _ae_title(text: str) -> str:
    if not 0 < len(text.strip()) <= 16 or "\\" in text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not an AE title (1 to 16 printable characters, no backslash)")
    return text.strip()


def _destination(text: str) -> Destination:
    try:
        return Destination.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value

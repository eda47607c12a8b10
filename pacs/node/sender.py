"""The sending side: staged results to the destination by C-STORE (pynetdicom SCU); a failure raises SendFailed."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

logger = logging.getLogger(__name__)

# Success, and the warnings that still mean "stored" (PS3.4 B.2.3: coercion, elements discarded, mismatch).
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class SendFailed(Exception):
    """The destination did not store the SR (unreachable, refused the association, or answered a failure)."""


@dataclass(frozen=True)
class Destination:
    """Where SRs go: the called AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Read AE_TITLE@host:port; ValueError saying the expected form otherwise."""
        match = _DESTINATION.match(text)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"destination {text!r} is not AE_TITLE@host:port (e.g. ARCHIVE@10.0.0.5:104)")
        return cls(match["ae"], match["host"].strip("[]"), int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def send_files(destination: Destination, calling_ae_title: str, paths: Sequence[Path],
               ssl_context: ssl.SSLContext | None = None, timeout_s: float = 60.0) -> None:
    """C-STORE DICOM files to the destination in one association, in order.

    Raises:
        SendFailed: the destination is unreachable, refuses the association or a file, or answers nothing.
    """
    datasets = [pydicom.dcmread(path) for path in paths]
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in dict.fromkeys(str(dataset.SOPClassUID) for dataset in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls_args = (ssl_context, destination.host) if ssl_context is not None else None
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not association.is_established:
        raise SendFailed(f"no association with {destination} (unreachable, or it refused the association)")
    try:
        for dataset in datasets:
            _check_stored(destination, association.send_c_store(dataset))
    finally:
        association.release()


def _check_stored(destination: Destination, status: Dataset) -> None:
    """Raise SendFailed unless the C-STORE status says stored."""
    if "Status" not in status:
        raise SendFailed(f"{destination} gave no answer to the C-STORE (timeout or aborted)")
    if int(status.Status) not in STORED_STATUSES:
        raise SendFailed(f"{destination} refused the instance with status 0x{int(status.Status):04X}")

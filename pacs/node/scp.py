"""The receiving side: a pynetdicom AE with C-ECHO and C-STORE, limits, --allow, TLS; each instance goes to a callback.

Scored storage classes (projection radiographs and secondary captures) and every other storage class are
accepted in every transfer syntax pydicom's installed decoders read; anything else is rejected in
negotiation by pynetdicom. Log lines name AE titles and hosts, never a patient attribute.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

SCORED_SOP_CLASSES = frozenset({
    ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage, MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
})
STATUS_SUCCESS, STATUS_OUT_OF_RESOURCES, STATUS_CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000

# (SOP class UID, SOP instance UID, StudyInstanceUID, the Part 10 file as received) -> C-STORE status
InstanceReceiver = Callable[[str, str, str, bytes], int]


@dataclass(frozen=True)
class ScpSettings:
    """Who may connect and how much: AE title, allowed calling AE titles, limits, TLS context."""

    ae_title: str
    allow: tuple[str, ...] = ()  # empty: any calling AE title
    max_associations: int = 10
    max_pdu_size: int = 65536
    network_timeout_s: float = 60.0
    ssl_context: ssl.SSLContext | None = None


def readable_transfer_syntaxes() -> list[UID]:
    """Every transfer syntax whose pixel data pydicom's installed plugins decode."""
    return [syntax for syntax in AllTransferSyntaxes if _decodable(syntax)]


def _decodable(syntax: UID) -> bool:
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def build_ae(settings: ScpSettings) -> AE:
    """The AE: Verification and every storage class as SCP, its limits and allowed callers set."""
    ae = AE(ae_title=settings.ae_title)
    syntaxes = readable_transfer_syntaxes()
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, syntaxes)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = settings.network_timeout_s
    ae.require_calling_aet = list(settings.allow)
    return ae


def start_scp(settings: ScpSettings, host: str, port: int, receiver: InstanceReceiver) -> ThreadedAssociationServer:
    """Listen on host:port in background threads; each received instance goes to `receiver`."""
    handlers = [(evt.EVT_C_STORE, _handle_store, [receiver]), (evt.EVT_ACCEPTED, _log_accepted),
                (evt.EVT_REJECTED, _log_rejected), (evt.EVT_ABORTED, _log_aborted)]
    return build_ae(settings).start_server((host, port), block=False, evt_handlers=handlers,
                                           ssl_context=settings.ssl_context)


def _handle_store(event: evt.Event, receiver: InstanceReceiver) -> int:
    """C-STORE: hand the instance, as received, to the receiver; its status goes back to the caller."""
    request = event.request
    try:
        dataset = event.dataset
        study_uid, sop_instance_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
    except (AttributeError, ValueError, OSError, EOFError):
        logger.warning("instance from %s without a readable StudyInstanceUID or SOPInstanceUID; refused",
                       _peer(event))
        return STATUS_CANNOT_UNDERSTAND
    if sop_instance_uid != str(request.AffectedSOPInstanceUID):
        logger.warning("instance from %s whose SOPInstanceUID is not the C-STORE's; refused", _peer(event))
        return STATUS_CANNOT_UNDERSTAND
    return receiver(str(request.AffectedSOPClassUID), sop_instance_uid, study_uid, event.encoded_dataset())


def _peer(event: evt.Event) -> str:
    """'AE at host:port' of the calling side."""
    requestor = event.assoc.requestor
    return f"{requestor.ae_title.strip() or '(no AE title)'} at {requestor.address}:{requestor.port}"


def _log_accepted(event: evt.Event) -> None:
    logger.info("association from %s accepted", _peer(event))


def _log_rejected(event: evt.Event) -> None:
    logger.warning("association from %s rejected (calling AE title not in --allow, or nothing acceptable)",
                   _peer(event))


def _log_aborted(event: evt.Event) -> None:
    logger.warning("association from %s aborted", _peer(event))


def describe_sop_class(uid: str) -> str:
    """The SOP class's name, or its UID when pydicom does not know it."""
    return UID(uid).name or uid


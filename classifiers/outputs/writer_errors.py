"""A DICOM output writer's failure as a typed error naming the attributes at fault, never their values.

pydicom and highdicom fail on header values invalid for their VR ("Unable to convert '1927-08-15' to 'DA'
object"): such a text must reach neither the log nor the client. The writers raise `ReportNotWritable`
instead, naming the source attributes that are not valid for their VR.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

from classifiers.errors import ClassifierError, ReportNotWritable
from classifiers.logs import quiet_dicom_libraries

Writer = TypeVar("Writer", bound=Callable[..., Any])


def invalid_attributes(datasets: Iterable[Dataset]) -> list[str]:
    """Keywords (or tags) of top-level attributes whose values are not valid for their VR, first seen first."""
    found: dict[str, None] = {}
    for dataset in datasets:
        for element in dataset.elements():
            if element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue
            try:
                validate_value(element.VR, element.value, config.RAISE)
            except Exception:  # noqa: BLE001 - any failure means "not valid for its VR"
                found.setdefault(element.keyword or str(element.tag), None)
    return list(found)


def typed_writer_errors(what: str) -> Callable[[Writer], Writer]:
    """Decorate a writer whose first argument is its source dataset(s): untyped failures become ReportNotWritable."""

    def decorate(writer: Writer) -> Writer:
        @functools.wraps(writer)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            quiet_dicom_libraries()
            try:
                return writer(*args, **kwargs)
            except ClassifierError:
                raise
            except Exception as error:  # noqa: BLE001 - the library's text may quote a value; only its type is kept
                if _raised_in(error, writer.__module__):
                    raise  # the writer's own checks (no source, one overlay per view): its message is ours
                sources = args[0] if args else ()
                datasets = [sources] if isinstance(sources, Dataset) else list(sources)
                at_fault = invalid_attributes(dataset for dataset in datasets if isinstance(dataset, Dataset))
                verb = "is not valid for its VR" if len(at_fault) == 1 else "are not valid for their VR"
                named = f"{', '.join(at_fault)} {verb}" if at_fault else f"the writer failed ({type(error).__name__})"
                raise ReportNotWritable(f"the {what} cannot be written from this study's headers: {named}; ask"
                                        " for the JSON answer (Accept: application/json) or correct the"
                                        " header") from None

        return wrapped  # type: ignore[return-value]

    return decorate


def _raised_in(error: BaseException, module: str) -> bool:
    """True when the innermost frame of the error's traceback is in `module`."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and trace.tb_frame.f_globals.get("__name__") == module

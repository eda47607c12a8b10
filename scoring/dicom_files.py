"""`score.py --sr`: a DICOM study's SR, and with heatmaps its Secondary Captures and presentation states, as files."""

from __future__ import annotations

from pathlib import Path

from classifiers.errors import MalformedDicom
from classifiers.outputs.dicom_outputs import build_dicom_outputs, scoring_backend
from classifiers.pipeline import Pipeline
from classifiers.results import StudyResult


def write_dicom_outputs(sr_folder: Path, result: StudyResult, explained: bool, pipeline: Pipeline) -> list[str]:
    """Write <UID>.dcm (the SR), <UID>_heatmap<N>.dcm and <UID>_gsps<N>.dcm; return the writers' warnings.

    Earlier files of the study are replaced. A study whose header cannot be written in is a warning, not a failure.
    """
    try:
        outputs = build_dicom_outputs(result, explained=explained,
                                      backend=scoring_backend(pipeline, result))
    except MalformedDicom as error:
        return [f"no SR written: {error}"]
    except Exception as error:  # noqa: BLE001 - a writer's text may quote a header value: only its type is kept
        return [f"no SR written: the DICOM objects could not be built from these headers ({type(error).__name__})"]
    uid = outputs.report.StudyInstanceUID
    (sr_folder / f"{uid}.dcm").write_bytes(outputs.instances_bytes()[0])
    for kind, instances in (("heatmap", outputs.captures), ("gsps", outputs.presentation_states)):
        for number, instance in enumerate(instances, start=1):
            instance.save_as(sr_folder / f"{uid}_{kind}{number}.dcm", enforce_file_format=True)
    return list(outputs.warnings)

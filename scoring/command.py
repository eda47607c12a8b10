"""What `score.py` does, as one function: find studies, resume, score, then report and worklist.

Exit codes: 0 done (unreadable images do not fail the run; they are in the errors file), 1 scoring
failed part-way (rows so far are kept; rerun to resume), 2 nothing was scored because the input,
output, options or models need fixing first, 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from classifiers.logs import safe_error_text
from classifiers.names import printable_name
from mura.studies import StudySourceError, find_studies
from scoring.bootstrap import DEFAULT_REPLICATES, DEFAULT_SEED
from scoring.heatmaps import (
    PEAK_COLUMNS,
    find_findings_csv,
    open_peaks,
    overlay_path,
    peaks_path,
    score_pointing_game,
    write_pointing_report,
)
from scoring.output import AppendOnlyCsv, OutputError, open_outputs, read_predictions
from scoring.ray_engine import RayEngineError
from scoring.runner import StudyOutcome, score_studies

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ScoringOptions:
    """The options of one `score.py` run, one-to-one with its command-line flags."""

    input_path: Path
    out: Path
    models: Path
    aggregation: str = "mean"
    report: Path | None = None
    worklist: Path | None = None
    errors: Path | None = None
    sr: Path | None = None
    workers: int = 8
    decode_workers: int = 4
    bootstrap_replicates: int = DEFAULT_REPLICATES
    seed: int = DEFAULT_SEED
    progress: bool = True
    heatmaps: Path | None = None  # folder for overlay PNGs; the peaks go to <out stem>_peaks.csv
    findings: Path | None = None  # findings CSV for the pointing game (default: found beside the input)
    engine: str = "local"  # "local": threads in this process; "ray": actors on a Ray cluster (scoring.ray_engine)
    ray_address: str | None = None  # None: a local Ray; "auto": the cluster this machine belongs to
    gpus_per_worker: float = 0.0  # Ray: GPUs per actor

    @property
    def errors_path(self) -> Path:
        """The errors CSV: `--errors`, else `<out stem>_errors.csv` beside the output."""
        return self.errors or self.out.with_name(f"{self.out.stem}_errors.csv")


def say(message: str) -> None:
    """Print a status line on stderr without breaking the progress bar."""
    tqdm.write(printable_name(f"score.py: {message}"), file=sys.stderr)


def _check_options(options: ScoringOptions) -> str | None:
    """Return what is wrong with the plain options, or None."""
    if options.workers < 1 or options.decode_workers < 1:
        return "--workers and --decode-workers must be at least 1"
    if options.bootstrap_replicates < 1:
        return "--bootstrap-replicates must be at least 1"
    if options.engine not in ENGINES:
        return f"unknown engine {options.engine!r}; valid: {', '.join(ENGINES)}"
    if options.engine == "ray" and (options.heatmaps is not None or options.sr is not None):
        return "--heatmaps and --sr work with the local engine only; drop --engine ray, or them"
    if options.gpus_per_worker < 0:
        return "--gpus-per-worker must be 0 or more"
    if options.engine == "local" and (options.ray_address or options.gpus_per_worker):
        return "--ray-address and --gpus-per-worker are for --engine ray; add it, or drop them"
    return None


def run_scoring(options: ScoringOptions) -> int:
    """Run a whole scoring job and return the process exit code (see the module docstring)."""
    problem = _check_options(options)
    if problem:
        say(f"error: {problem}")
        return EXIT_USAGE
    try:
        if options.sr is not None:
            _make_sr_folder(options.sr)
        studies = find_studies(options.input_path)
        predictions, errors, done = open_outputs(options.out, options.errors_path)
    except (StudySourceError, OutputError) as error:
        say(f"error: {error}")
        return EXIT_USAGE
    todo = [study for study in studies if study.study_id not in done]
    say(f"{len(studies)} studies in {options.input_path}; {len(studies) - len(todo)} already in "
        f"{options.out}, {len(todo)} to score")
    try:
        exit_code = _score(options, todo, predictions, errors) if todo else EXIT_OK
    finally:
        predictions.close()
        errors.close()
    if exit_code == EXIT_OK:
        exit_code = _write_extras(options)
    return exit_code


def _make_sr_folder(folder: Path) -> None:
    """Create the --sr folder; OutputError saying why when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the --sr folder {folder} ({error.strerror}); choose a writable folder") \
            from None


def _load_pipeline(models: Path):
    """Load the pipeline; return None after saying why if the repository does not load."""
    from classifiers import ClassifierError, Pipeline

    try:
        return Pipeline.load(models)
    except ClassifierError as error:
        say(f"error: the models in {models} do not load: {error}")
    except OSError as error:
        say(f"error: cannot read the models in {models} ({error}); pass --models FOLDER")
    return None


def _score(options: ScoringOptions, todo: list, predictions, errors) -> int:
    """Score the studies not yet in the output, appending rows as they finish."""
    engine = _start_engine(options)
    if engine is None:
        return EXIT_USAGE
    run, close = engine
    started = time.perf_counter()
    counts = {"studies": 0, "images": 0, "unreadable": 0, "refused": 0}
    progress = tqdm(total=len(todo), unit="study", file=sys.stderr, disable=not options.progress,
                    dynamic_ncols=True, smoothing=0.1)

    peaks = open_peaks(options.out) if options.heatmaps else None

    def on_outcome(outcome: StudyOutcome) -> None:
        if peaks is not None:
            _save_heatmaps(options.heatmaps, peaks, outcome)
        predictions.append(outcome.row)
        if outcome.refused is not None:
            refused = outcome.refused
            errors.append({"study": outcome.study.study_id, "image": str(refused.image_path), "error": refused.error,
                           "message": refused.message})
            say(f"warning: {outcome.study.study_id}: {refused.message}")
            counts["refused"] += 1
        for failure in outcome.failures:
            errors.append({"study": outcome.study.study_id, "image": str(failure.image_path),
                           "error": failure.error, "message": failure.message})
            say(f"warning: {outcome.study.study_id}: {failure.message}")
        counts.setdefault("first_result_s", time.perf_counter() - started)  # Ray: its start and the model loads
        counts["studies"] += 1
        counts["images"] += int(outcome.row["n_images"])
        counts["unreadable"] += len(outcome.failures)
        progress.update(1)
        progress.set_postfix_str(f"{counts['images'] / (time.perf_counter() - started):.1f} images/s")

    try:
        run(todo, on_outcome)
    except KeyboardInterrupt:
        progress.close()
        say(f"interrupted: {counts['studies']} studies saved in {options.out} this run; "
            "rerun the same command to score the rest")
        return EXIT_INTERRUPTED
    except RayEngineError as error:
        progress.close()
        if error.models_failed:
            say(f"error: {error}")
            return EXIT_USAGE
        say(f"error: scoring on Ray failed ({error}); the {counts['studies']} studies scored this run are saved"
            f" in {options.out}; rerun the same command to resume")
        return EXIT_FAILED
    except Exception as error:
        # Any failure: the rows so far are kept; say what happened and how to resume, without a traceback.
        progress.close()
        detail = safe_error_text(error)  # a library's message may quote a header value (patient data)
        say(f"error: scoring failed ({detail}); the {counts['studies']} studies "
            f"scored this run are saved in {options.out}; rerun the same command to resume")
        return EXIT_FAILED
    finally:
        close()
        if peaks is not None:
            peaks.close()
    progress.close()
    seconds = time.perf_counter() - started
    refused = f", {counts['refused']} refused" if counts["refused"] else ""
    say(f"scored {counts['studies']} studies ({counts['images']} images, {counts['unreadable']} unreadable{refused}) "
        f"in {seconds:.1f} s (first result after {counts.get('first_result_s', seconds):.1f} s), "
        f"{counts['studies'] / seconds:.2f} studies/s, {counts['images'] / seconds:.1f} images/s; rows in {options.out}"
        + (f", unreadable images and refused studies in {options.errors_path}"
           if counts["unreadable"] or counts["refused"] else ""))
    return EXIT_OK


def _start_engine(options: ScoringOptions):
    """(run(studies, on_outcome), close()) for the chosen engine, or None after saying why it cannot start."""
    if options.engine == "ray":
        return _start_ray_engine(options)
    pipeline = _load_pipeline(options.models)
    if pipeline is None:
        return None

    def run(studies: list, on_outcome) -> None:
        score_studies(pipeline, studies, on_outcome, options.aggregation, options.workers,
                      options.decode_workers, explain=options.heatmaps is not None, sr_folder=options.sr)

    return run, pipeline.close


def _start_ray_engine(options: ScoringOptions):
    """The Ray engine: check Ray and the repository here, load the models in the actors."""
    from classifiers import ClassifierError
    from classifiers.repository.manifest import read_manifest
    from scoring.ray_engine import INSTALL_HINT, RayOptions, score_studies_on_ray

    try:
        import ray  # noqa: F401
    except ImportError:
        say(f"error: {INSTALL_HINT}")
        return None
    try:
        read_manifest(options.models)  # files and checksums, before any actor starts
    except ClassifierError as error:
        say(f"error: the models in {options.models} do not load: {error}")
        return None
    ray_options = RayOptions(options.ray_address, options.workers, options.gpus_per_worker)

    def run(studies: list, on_outcome) -> None:
        score_studies_on_ray(options.models, studies, on_outcome, options.aggregation, ray_options)

    return run, lambda: None


def _write_extras(options: ScoringOptions) -> int:
    """Write the report, the worklist and the pointing game from the complete output files."""
    exit_code = _write_report_and_worklist(options)
    if exit_code == EXIT_OK and options.heatmaps is not None:
        try:
            _write_pointing_game(options)
        except (OSError, ValueError) as error:
            say(f"error: no pointing game: {error}")
            return EXIT_USAGE
    return exit_code


def _write_report_and_worklist(options: ScoringOptions) -> int:
    """Write the report and the worklist from the complete predictions file."""
    if options.report is None and options.worklist is None:
        return EXIT_OK
    rows = read_predictions(options.out)
    try:
        if options.worklist is not None:
            from scoring.worklist import write_worklist

            count = write_worklist(options.worklist, rows)
            say(f"worklist of {count} studies, most likely abnormal first: {options.worklist}")
        if options.report is not None:
            _write_report(options, rows)
    except OSError as error:
        say(f"error: cannot write {error.filename} ({error.strerror}); choose a writable path")
        return EXIT_USAGE
    return EXIT_OK


def _save_heatmaps(folder: Path, peaks, outcome: StudyOutcome) -> None:
    """Write each explained view's overlay PNG and its peak row."""
    for path, (width, height), explanation in outcome.explained:
        target = overlay_path(folder, outcome.study.study_id, path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(explanation.heatmap_png)
        peaks.append({"study": outcome.study.study_id, "image": path.name, "body_part": outcome.row["body_part"],
                      "peak_x": explanation.peak[0], "peak_y": explanation.peak[1], "width": width,
                      "height": height, "method": explanation.method})


def _write_pointing_game(options: ScoringOptions) -> None:
    """Score the heatmap peaks against the findings CSV (given or beside the input), when there is one."""
    findings = options.findings or find_findings_csv(options.input_path)
    if findings is None:
        say("no findings CSV (--findings, or <split>_findings.csv beside the input): no pointing game")
        return
    studies = {study.study_id: study for study in find_studies(options.input_path)}
    image_paths = {(study_id, path.name): path for study_id, study in studies.items() for path in study.image_paths}
    rows = AppendOnlyCsv(peaks_path(options.out), PEAK_COLUMNS).read_rows()
    result = score_pointing_game(findings, rows, image_paths)
    overall = result["per_body_part"].get("overall")
    if overall is None:
        say(f"no scored view has a finding in {findings}: no pointing game")
        return
    if options.report is not None:
        write_pointing_report(options.report, result)
    say(f"pointing game: {overall['hits']}/{overall['views']} peaks in a finding's box (hit rate "
        f"{overall['hit_rate']:.3f})" + (f"; per body part in {options.report}/report.md" if options.report else ""))


def _report_manifest(models: Path):
    """The repository's manifest for the report's calibration and operating points; None (said why) if unreadable."""
    from classifiers import ClassifierError
    from classifiers.repository.manifest import read_manifest

    try:
        return read_manifest(models, verify_checksums=False)
    except (ClassifierError, OSError, ValueError) as error:
        say(f"warning: the report leaves out the manifest's calibration and operating points ({error})")
        return None


def _write_report(options: ScoringOptions, rows: list[dict[str, str]]) -> None:
    from scoring.report import write_report

    if not any(row["true_label"] in ("0", "1") for row in rows):
        say("no study has a known label (MURA *_positive/*_negative folders or *_labeled_studies.csv), "
            "so no report was written")
        return
    report = write_report(options.report, rows, options.bootstrap_replicates, options.seed,
                          _report_manifest(options.models))
    overall = report["abnormality"]["overall"]
    say(f"report in {options.report}/report.md: overall kappa {overall['kappa']['value']:.3f}, "
        f"AUROC {overall['auroc']['value']:.3f}, ECE {report['calibration']['overall']['ece']['value']:.3f}, "
        f"routing accuracy {report['routing']['accuracy']['value']:.3f}")

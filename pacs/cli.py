"""Command line of the Orthanc worker.

    python -m pacs --orthanc URL [--models DIR] [--state PATH] [--once] [--poll-seconds S] [--heatmaps]
                   [--username U --password P] [--retries N]
    python -m pacs --dicomweb URL [same options] [--token-file PATH] [--lookback-days D]
    python -m pacs worklist [--state PATH]

Credentials: --username/--password, else the ORTHANC_USERNAME / ORTHANC_PASSWORD environment variables.
Exit codes (see docs/PACS.md): 0 done (--once), 2 bad usage, 3 Orthanc unreachable or answering 5xx,
4 credentials refused, 5 model repository unusable, 6 state file unreadable, unwritable, not a worker
state, or locked by another worker, 7 other Orthanc error. Without --once the worker polls and never
exits on an Orthanc error: it logs one line and waits (doubling up to MAX_BACKOFF_S).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from pacs.client import RETRY_DELAYS_S, OrthancClient, OrthancError, OrthancUnauthorized, OrthancUnreachable
from pacs.state import StateError, load_state, locked_state
from pacs.worklist import format_worklist, worklist_rows

logger = logging.getLogger("pacs")

EXIT_DONE, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_UNAUTHORIZED, EXIT_MODELS, EXIT_STATE, EXIT_ORTHANC = 0, 2, 3, 4, 5, 6, 7
DEFAULT_STATE = Path("pacs-state.json")
MAX_BACKOFF_S = 300.0


def main(argv: list[str] | None = None, clock: Callable[[], datetime.datetime] | None = None) -> int:
    """Run the worker or print the worklist; returns the exit code (`clock`: the DICOMweb mode's, for tests)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if argv[:1] == ["worklist"]:
        return print_worklist(_worklist_parser().parse_args(argv[1:]).state)
    arguments = _worker_parser().parse_args(argv)
    try:
        with locked_state(arguments.state):  # one worker per state file: a second one exits 6 naming the lock
            load_state(arguments.state)
            if arguments.dicomweb:
                return _run_dicomweb(arguments, clock)
            return _run_orthanc(arguments)
    except StateError as error:
        return _fail(EXIT_STATE, str(error))
    except OrthancError as error:
        return _fail(exit_code_of(error), str(error))
    except ModelsUnusable as error:
        return _fail(EXIT_MODELS, str(error))


def _run_orthanc(arguments: argparse.Namespace) -> int:
    """The Orthanc mode: the change feed once (--once) or for ever."""
    client = OrthancClient(arguments.orthanc, arguments.username or os.environ.get("ORTHANC_USERNAME"),
                           arguments.password or os.environ.get("ORTHANC_PASSWORD"),
                           RETRY_DELAYS_S[:arguments.retries])
    if arguments.once:
        client.get_json("/system")  # fail fast, before the models load
    with closing(_load_pipeline(arguments.models)) as pipeline:  # its batcher threads end with the run
        if arguments.once:
            return run_once(client, pipeline, arguments.state, arguments.heatmaps)
        poll(client, pipeline, arguments.state, arguments.poll_seconds, arguments.heatmaps)
    return EXIT_DONE


def _run_dicomweb(arguments: argparse.Namespace, clock: Callable[[], datetime.datetime] | None) -> int:
    """The DICOMweb mode (pacs.dicomweb_follower): QIDO-RS polls once (--once) or for ever."""
    from pacs.dicomweb import DicomwebArchive, make_session
    from pacs.dicomweb_follower import poll as poll_dicomweb
    from pacs.dicomweb_follower import run_once as run_dicomweb_once
    from pacs.dicomweb_follower import utc_now

    clock = clock or utc_now
    session = make_session(arguments.username or os.environ.get("ORTHANC_USERNAME"),
                           arguments.password or os.environ.get("ORTHANC_PASSWORD"), arguments.token_file)
    archive = DicomwebArchive(arguments.dicomweb, session, RETRY_DELAYS_S[:arguments.retries])
    if arguments.once:
        archive.check()  # fail fast, before the models load
    with closing(_load_pipeline(arguments.models)) as pipeline:  # its batcher threads end with the run
        if arguments.once:
            run_dicomweb_once(archive, pipeline, arguments.state, clock(), arguments.lookback_days, arguments.heatmaps)
            return EXIT_DONE
        poll_dicomweb(archive, pipeline, arguments.state, arguments.poll_seconds, arguments.lookback_days, clock,
                      heatmaps=arguments.heatmaps)
    return EXIT_DONE


class ModelsUnusable(Exception):
    """The model repository cannot be loaded."""


def _load_pipeline(models: Path):
    """Load the service's pipeline (TensorFlow is imported here, after the cheap checks)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from classifiers import ModelRepositoryError, Pipeline

    try:
        return Pipeline.load(models)
    except ModelRepositoryError as error:
        raise ModelsUnusable(f"cannot load the models in {models}: {error}") from None


def run_once(client: OrthancClient, pipeline, state_path: Path, heatmaps: bool = False) -> int:
    """Process the change feed once from where the state stopped; returns EXIT_DONE."""
    from pacs.follower import follow_changes

    state = load_state(state_path)
    num_changed = follow_changes(client, pipeline, state, state_path, heatmaps=heatmaps)
    logger.info("done: %d studies scored or skipped, change feed at %d", num_changed, state.last_change)
    return EXIT_DONE


def poll(client: OrthancClient, pipeline, state_path: Path, poll_seconds: float, heatmaps: bool = False) -> None:
    """Process the change feed every `poll_seconds`, forever; Orthanc errors are logged and waited out."""
    from pacs.follower import follow_changes

    backoff_s = poll_seconds
    while True:
        try:
            follow_changes(client, pipeline, load_state(state_path), state_path, heatmaps=heatmaps)
            backoff_s = poll_seconds
        except OrthancError as error:
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
            logger.warning("%s; next try in %.0f s", error, backoff_s)
        time.sleep(backoff_s)


def exit_code_of(error: OrthancError) -> int:
    """The documented exit code of an Orthanc error."""
    if isinstance(error, OrthancUnauthorized):
        return EXIT_UNAUTHORIZED
    if isinstance(error, OrthancUnreachable):
        return EXIT_UNREACHABLE
    return EXIT_ORTHANC


def print_worklist(state_path: Path) -> int:
    """Print the worklist of the state file."""
    try:
        state = load_state(state_path)
    except StateError as error:
        return _fail(EXIT_STATE, str(error))
    sys.stdout.write(format_worklist(worklist_rows(state)))
    return EXIT_DONE


def _fail(code: int, message: str) -> int:
    """One line on stderr, the exit code back."""
    print(f"pacs: error: {message}", file=sys.stderr)
    return code


def _worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pacs", description="Triage every new radiograph study of an"
                                     " Orthanc and store the result as a DICOM SR in the study.",
                                     epilog="Also: python -m pacs worklist [--state PATH]")
    archive = parser.add_mutually_exclusive_group(required=True)
    archive.add_argument("--orthanc", help="Orthanc's REST URL, e.g. http://127.0.0.1:8042")
    archive.add_argument("--dicomweb", help="a DICOMweb base URL (QIDO-RS, WADO-RS, STOW-RS below it), e.g."
                         " http://127.0.0.1:8042/dicom-web")
    parser.add_argument("--models", type=Path, default=Path("h5"), help="model repository (default h5/)")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"state file (default {DEFAULT_STATE})")
    parser.add_argument("--once", action="store_true", help="process what is there and exit (cron, tests)")
    parser.add_argument("--heatmaps", action="store_true", help="also store each view's heatmap: a Secondary Capture"
                        " and a presentation state marking its peak")
    parser.add_argument("--poll-seconds", type=_positive, default=10.0, help="seconds between polls (default 10)")
    parser.add_argument("--username", help="Orthanc user (default: $ORTHANC_USERNAME)")
    parser.add_argument("--password", help="Orthanc password (default: $ORTHANC_PASSWORD)")
    parser.add_argument("--retries", type=int, choices=range(len(RETRY_DELAYS_S) + 1), default=len(RETRY_DELAYS_S),
                        help="retries of a request while Orthanc is unreachable, after 0.5, 1, 2, 4 s (default 4)")
    parser.add_argument("--token-file", type=Path, help="DICOMweb: a file holding a bearer token, read at each"
                        " request (cloud DICOM stores); instead of --username/--password")
    parser.add_argument("--lookback-days", type=_days, default=1, help="DICOMweb: search studies dated from the"
                        " last poll's date less this many days (default 1)")
    return parser


def _worklist_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pacs worklist",
                                     description="Scored studies, most likely abnormal first (tab-separated).")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"state file (default {DEFAULT_STATE})")
    return parser


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _days(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of days (0 or more)")
    return value

"""`python -m pacs --dicomweb URL`: the worker against any DICOMweb service (see pacs.cli, docs/PACS.md)."""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable

from pacs.cli import EXIT_DONE, EXIT_MODELS, EXIT_STATE, ModelsUnusable, _fail, _load_pipeline, exit_code_of
from pacs.client import RETRY_DELAYS_S, OrthancError
from pacs.dicomweb import DicomwebArchive, make_session
from pacs.dicomweb_follower import poll, run_once, utc_now
from pacs.state import StateError, load_state


def run_dicomweb_worker(arguments: argparse.Namespace,
                        clock: Callable[[], datetime.datetime] | None = None) -> int:
    """Run the worker's DICOMweb mode with the parsed options of pacs.cli; returns the exit code."""
    clock = clock or utc_now
    session = make_session(arguments.username or os.environ.get("ORTHANC_USERNAME"),
                           arguments.password or os.environ.get("ORTHANC_PASSWORD"), arguments.token_file)
    archive = DicomwebArchive(arguments.dicomweb, session, RETRY_DELAYS_S[:arguments.retries])
    try:
        load_state(arguments.state)
        if arguments.once:
            archive.check()  # fail fast, before the models load
        pipeline = _load_pipeline(arguments.models)
        if arguments.once:
            run_once(archive, pipeline, arguments.state, clock(), arguments.lookback_days)
            return EXIT_DONE
        poll(archive, pipeline, arguments.state, arguments.poll_seconds, arguments.lookback_days, clock)
    except StateError as error:
        return _fail(EXIT_STATE, str(error))
    except OrthancError as error:
        return _fail(exit_code_of(error), str(error))
    except ModelsUnusable as error:
        return _fail(EXIT_MODELS, str(error))
    return EXIT_DONE

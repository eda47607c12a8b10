"""Drift: PSI maths, the reference command, and the service's monitor seeing a shifted stream and an unshifted one."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import entropy

from classifiers.body_parts import BODY_PARTS
from classifiers.drift import (
    DRIFT_PSI,
    DRIFT_REFERENCE_KEY,
    EPSILON,
    Histogram,
    population_stability_index,
    read_drift_reference,
    reference_histogram,
    status_of,
)
from classifiers.drift_monitor import DriftMonitor
from classifiers.errors import ModelRepositoryError
from tests.support.dicom_factory import png_bytes, synthetic_radiograph
from tests.support.model_factory import build_linear_model, write_repository

PART = "XR_WRIST"
VIEW_SIZE = (96, 80)
REFERENCE_STUDIES = 300
STREAM_STUDIES = 100
DRIFT_CONFIG = {"DRIFT_WINDOW": 100, "DRIFT_MIN_STUDIES": 50}
OVEREXPOSED_GAMMA = 0.7  # another exposure: every view brighter, its contrast flatter


@pytest.mark.parametrize(("reference", "window"), [
    ([0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]),
    ([0.2] * 5, [0.5, 0.2, 0.1, 0.1, 0.1]),
    ([0.9, 0.1], [0.6, 0.4]),
])
def test_psi_is_the_symmetric_kullback_leibler_divergence(reference: list[float], window: list[float]) -> None:
    expected = entropy(window, reference) + entropy(reference, window)
    assert population_stability_index(reference, window) == pytest.approx(expected, rel=1e-12)


def test_psi_of_identical_histograms_is_zero_and_of_an_empty_bin_uses_the_epsilon_floor() -> None:
    assert population_stability_index([0.2] * 5, [0.2] * 5) == 0.0
    figure = population_stability_index([0.5, 0.5], [1.0, 0.0])
    assert figure == pytest.approx(0.5 * math.log(2) + (EPSILON - 0.5) * math.log(EPSILON / 0.5))


@pytest.mark.parametrize(("psi", "status"), [(0.0, "stable"), (0.0999, "stable"), (0.1, "watch"), (0.2499, "watch"),
                                             (0.25, "drift"), (3.0, "drift")])
def test_status_uses_the_conventional_thresholds(psi: float, status: str) -> None:
    assert status_of(psi) == status


def test_reference_histogram_has_its_edges_at_the_quantiles() -> None:
    values = np.random.default_rng(0).beta(2, 5, size=1000)
    histogram = reference_histogram(values, bins=5)
    assert histogram.edges[0] == 0.0 and histogram.edges[-1] == 1.0
    np.testing.assert_allclose(histogram.edges[1:-1], np.quantile(values, [0.2, 0.4, 0.6, 0.8]))
    np.testing.assert_allclose(histogram.proportions, [0.2] * 5, atol=0.002)
    np.testing.assert_allclose(histogram.proportions_of(values), histogram.proportions)


def test_reference_histogram_of_tied_values_merges_bins() -> None:
    histogram = reference_histogram([0.3] * 50 + [0.9] * 50, bins=5)
    assert histogram.edges == (0.0, 0.3, 0.9, 1.0)
    assert histogram.proportions == (0.0, 0.5, 0.5)


def test_window_values_outside_the_edges_count_in_the_outer_bins() -> None:
    histogram = Histogram((0.2, 0.5, 0.8), (0.5, 0.5))
    np.testing.assert_allclose(histogram.proportions_of([0.0, 0.1, 0.9, 1.0]), [0.5, 0.5])


# --- the repository's reference -----------------------------------------------------------------------------------


def _view(seed: int, gamma: float = 1.0) -> bytes:
    """One synthetic wrist view as an 8-bit PNG; gamma < 1 brightens it (another exposure)."""
    brightness = synthetic_radiograph(PART, seed=seed, size=VIEW_SIZE) ** gamma
    return png_bytes(np.round(brightness * 255).astype(np.uint8))


def _write_studies(root: Path, seeds: range) -> Path:
    """A MURA-layout folder of one-view wrist studies."""
    for seed in seeds:
        folder = root / PART / f"patient{seed:05d}" / "study1_negative"
        folder.mkdir(parents=True)
        (folder / "image1.png").write_bytes(_view(seed))
    return root


def _write_linear_repository(folder: Path) -> Path:
    """Router and experts that read the views' mean brightness: the router says XR_WRIST, more surely when brighter."""
    router_kernel = np.zeros((3, len(BODY_PARTS)))
    router_kernel[:, BODY_PARTS.index(PART)] = 4.0
    router_bias = np.zeros(len(BODY_PARTS))
    router_bias[BODY_PARTS.index(PART)] = 1.0
    router = build_linear_model(router_kernel, router_bias, "softmax")
    expert = build_linear_model(np.full((3, 1), 3.0), np.array([-2.5]), "sigmoid")
    return write_repository(folder, router, {part: expert for part in BODY_PARTS})


@pytest.fixture(scope="module")
def drift_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Linear models, a gate fitted on 240 wrist views and a drift reference of 300 others, written by the commands."""
    from training.drift_reference import main as drift_reference_main
    from training.fit_gate import fit_repository_gate, training_image_paths

    work = tmp_path_factory.mktemp("drift")
    repository = _write_linear_repository(work / "repository")
    training = _write_studies(work / "train", range(5000, 5240))
    fit_repository_gate(repository, training_image_paths(training), "tiny wrist views", log=lambda line: None)
    validation = _write_studies(work / "valid", range(REFERENCE_STUDIES))
    assert drift_reference_main([str(repository), "--data", str(validation), "--min-studies", "100"]) == 0
    return repository


@pytest.fixture
def drift_app(drift_repository: Path):
    """The service over `drift_repository`, with a drift window of 100 studies."""
    from app import create_app

    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(drift_repository), **DRIFT_CONFIG})
    yield flask_app
    flask_app.extensions["pipeline_loader"].close()


def _send(client, seeds: range, gamma: float = 1.0) -> None:
    """POST one study per seed, as raw PNG bodies."""
    for seed in seeds:
        answer = client.post("/predict", data=_view(seed, gamma), content_type="image/png")
        assert answer.status_code == 200, answer.get_json()


def _gauges(client) -> dict[tuple[str, tuple[str, ...]], float]:
    """Every drift and gate gauge sample of /metrics by (name, label values)."""
    text = client.get("/metrics").get_data(as_text=True)
    return {(sample.name, tuple(sample.labels.values())): sample.value for family in
            text_string_to_metric_families(text) for sample in family.samples
            if sample.name.startswith(("triage_drift", "triage_ood"))}


def _drift_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "classifiers.drift_monitor"]


def test_reference_command_records_each_signal_of_the_validation_studies(drift_repository: Path) -> None:
    document = json.loads((drift_repository / "manifest.json").read_text())[DRIFT_REFERENCE_KEY]
    assert list(document["body_parts"]) == [PART]
    part = document["body_parts"][PART]
    assert part["studies"] == REFERENCE_STUDIES
    assert len(part["abnormality"]["edges"]) == 6 and sum(part["abnormality"]["proportions"]) == pytest.approx(1)
    assert 0.0 <= part["out_of_distribution_rate"] < 0.05
    assert document["computed_on"]["data"] == "valid" and document["computed_on"]["studies"] == REFERENCE_STUDIES
    assert read_drift_reference({DRIFT_REFERENCE_KEY: document}).parts[PART].studies == REFERENCE_STUDIES


def test_an_unshifted_stream_stays_under_the_drift_threshold(drift_app, caplog: pytest.LogCaptureFixture) -> None:
    client = drift_app.test_client()
    caplog.set_level(logging.WARNING)
    _send(client, range(10_000, 10_000 + STREAM_STUDIES))
    gauges = _gauges(client)
    assert gauges[("triage_drift_window_studies", (PART,))] == STREAM_STUDIES
    figures = {labels[1]: value for (name, labels), value in gauges.items() if name == "triage_drift_psi"}
    assert set(figures) == {"abnormality", "router_confidence", "out_of_distribution"}
    assert all(value < DRIFT_PSI for value in figures.values()), figures
    assert gauges[("triage_ood_rate", (PART,))] < 0.05
    assert _drift_warnings(caplog) == []
    assert client.get("/models").get_json()["drift"]["body_parts"][PART]["status"] != "drift"


def test_an_overexposed_stream_crosses_the_drift_threshold_and_warns_once(drift_app,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    client = drift_app.test_client()
    caplog.set_level(logging.WARNING)
    _send(client, range(20_000, 20_000 + STREAM_STUDIES), OVEREXPOSED_GAMMA)
    gauges = _gauges(client)
    figures = {labels[1]: value for (name, labels), value in gauges.items() if name == "triage_drift_psi"}
    assert all(value >= 0.25 for value in figures.values()), figures
    assert gauges[("triage_ood_rate", (PART,))] > 0.5
    warnings = _drift_warnings(caplog)
    assert sorted(message.split()[2] for message in warnings) == sorted(figures)  # one per signal, not per study
    assert all(message.startswith(f"drift: {PART} ") for message in warnings)
    drift = client.get("/models").get_json()["drift"]
    assert drift["body_parts"][PART]["status"] == "drift"

    caplog.clear()
    _send(client, range(30_000, 30_000 + STREAM_STUDIES))
    recovered = _drift_warnings(caplog)
    assert sorted(message.split()[3] for message in recovered) == sorted(figures)
    assert all(message.startswith(f"drift over: {PART} ") for message in recovered)


def test_no_figure_is_reported_before_the_window_holds_the_minimum(drift_app) -> None:
    client = drift_app.test_client()
    _send(client, range(40_000, 40_000 + DRIFT_CONFIG["DRIFT_MIN_STUDIES"] - 1), OVEREXPOSED_GAMMA)
    gauges = _gauges(client)
    assert not [name for name, _ in gauges if name == "triage_drift_psi"]
    part = client.get("/models").get_json()["drift"]["body_parts"][PART]
    assert part["status"] == "collecting (49 of 50 studies)" and part["psi"] == {}


def test_models_describes_the_reference_and_the_window(drift_app) -> None:
    drift = drift_app.test_client().get("/models").get_json()["drift"]
    assert drift["reference"]["computed_on"]["studies"] == REFERENCE_STUDIES
    assert drift["window"] == 100 and drift["min_studies"] == 50
    assert drift["thresholds"] == {"watch": 0.1, "drift": 0.25}
    assert drift["body_parts"][PART]["reference_studies"] == REFERENCE_STUDIES
    assert drift["body_parts"]["XR_ELBOW"]["status"] == "no reference"
    assert "note" not in drift  # computed with the models loaded


def test_models_says_when_the_repository_has_no_reference(client) -> None:
    drift = client.get("/models").get_json()["drift"]
    assert drift["reference"] is None
    assert "no drift reference" in drift["note"] and "python -m training.drift_reference" in drift["note"]


# --- a bad reference stops loading --------------------------------------------------------------------------------


def _good_part() -> dict:
    histogram = {"edges": [0.0, 0.5, 1.0], "proportions": [0.5, 0.5]}
    return {"studies": 200, "abnormality": histogram, "router_confidence": histogram, "out_of_distribution_rate": 0.0}


@pytest.mark.parametrize(("document", "named"), [
    ("not an object", "format 1"),
    ({"format": 1, "body_parts": {"XR_KNEE": _good_part()}}, "XR_KNEE"),
    ({"format": 1, "bins": "five", "body_parts": {}}, "bins"),
    ({"format": 1, "body_parts": {PART: {**_good_part(), "studies": 0}}}, "XR_WRIST.studies"),
    ({"format": 1, "body_parts": {PART: {**_good_part(), "abnormality": {"edges": [0.5, 0.2, 1.0],
                                                                          "proportions": [0.5, 0.5]}}}},
     "XR_WRIST.abnormality.edges"),
    ({"format": 1, "body_parts": {PART: {**_good_part(), "router_confidence": {"edges": [0.0, 0.5, 1.0],
                                                                                "proportions": [0.5, 0.6]}}}},
     "XR_WRIST.router_confidence.proportions"),
    ({"format": 1, "body_parts": {PART: {**_good_part(), "out_of_distribution_rate": 2}}},
     "XR_WRIST.out_of_distribution_rate"),
])
def test_a_bad_drift_reference_stops_loading_naming_the_key_and_the_command(
        tiny_repository: Path, tmp_path: Path, document: object, named: str) -> None:
    from classifiers import Pipeline

    repository = Path(shutil.copytree(tiny_repository, tmp_path / "repository"))
    manifest = json.loads((repository / "manifest.json").read_text())
    (repository / "manifest.json").write_text(json.dumps({**manifest, DRIFT_REFERENCE_KEY: document}))
    with pytest.raises(ModelRepositoryError) as raised:
        Pipeline.load(repository).close()
    message = str(raised.value)
    assert DRIFT_REFERENCE_KEY in message and named in message
    assert "python -m training.drift_reference REPOSITORY --data FOLDER" in message


def test_reference_command_on_the_tiny_repository(tiny_repository: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from training.drift_reference import main
    from training.synthetic import generate_dataset

    repository = Path(shutil.copytree(tiny_repository, tmp_path / "repository"))
    generate_dataset(tmp_path / "SYNTH", 14, seed=5, split="valid")
    assert main([str(repository), "--data", str(tmp_path / "SYNTH"), "--min-studies", "15"]) == 2
    assert "no body part has 15 scored studies" in capsys.readouterr().err
    assert main([str(repository), "--data", str(tmp_path / "SYNTH"), "--min-studies", "1"]) == 0
    manifest = json.loads((repository / "manifest.json").read_text())
    reference = read_drift_reference(manifest)
    assert sum(part.studies for part in reference.parts.values()) == 14
    assert manifest[DRIFT_REFERENCE_KEY]["computed_on"]["data"] == "SYNTH/valid"
    assert all(part.out_of_distribution_rate is None for part in reference.parts.values())  # no gate


def test_the_monitor_counts_every_study_sent_from_many_threads(tiny_pipeline, radiograph_png: bytes) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from classifiers import ViewInput

    result = tiny_pipeline.predict_study([ViewInput("a.png", radiograph_png)])
    monitor = DriftMonitor(window=1000, min_studies=10)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: monitor.observe(result), range(800)))
    assert monitor.snapshot()[result.body_part].studies == 800
    bounded = DriftMonitor(window=30, min_studies=10)
    for _ in range(100):
        bounded.observe(result)
    assert bounded.snapshot()[result.body_part].studies == 30


@pytest.mark.parametrize(("config", "named"), [({"DRIFT_WINDOW": 0}, "DRIFT_WINDOW"),
                                               ({"DRIFT_MIN_STUDIES": 300}, "DRIFT_MIN_STUDIES")])
def test_config_refuses_a_window_that_cannot_report(config: dict, named: str) -> None:
    from web.config import DEFAULTS, check_limits, read_environment

    assert read_environment({"TRIAGE_DRIFT_WINDOW": "500"}) == {"DRIFT_WINDOW": 500}
    with pytest.raises(ValueError, match=named):
        check_limits({**DEFAULTS, **config})


def test_monitoring_alert_rules_parse_and_name_only_exported_gauges(drift_app) -> None:
    import re

    import yaml

    text = (Path(__file__).resolve().parents[1] / "docs" / "MONITORING.md").read_text()
    rules = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])["groups"][0]["rules"]
    exported = {family.name for family in text_string_to_metric_families(
        drift_app.test_client().get("/metrics").get_data(as_text=True))}
    named = {name for rule in rules for name in re.findall(r"\btriage_\w+", rule["expr"])}
    assert {rule["alert"] for rule in rules} == {"TriageDrift", "TriageDriftWatch", "TriageOutOfDistributionRate"}
    assert named and named <= exported, named - exported


def test_a_reference_of_other_model_files_is_said_to_be_stale(drift_repository: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from app import create_app

    repository = Path(shutil.copytree(drift_repository, tmp_path / "repository"))
    manifest = json.loads((repository / "manifest.json").read_text())
    manifest[DRIFT_REFERENCE_KEY]["computed_on"]["models"][PART] = "XR_WRIST.weights.h5@000000000000"
    (repository / "manifest.json").write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING)
    flask_app = create_app({"TESTING": True, "MODELS_DIR": str(repository), **DRIFT_CONFIG})
    try:
        drift = flask_app.test_client().get("/models").get_json()["drift"]
    finally:
        flask_app.extensions["pipeline_loader"].close()
    assert drift["reference"] is not None
    assert f"computed with other models ({PART})" in drift["note"]
    assert any(f"other models ({PART})" in message for message in _drift_warnings(caplog))

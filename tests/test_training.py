"""Tests for training/: one-epoch export, weighted loss, notop weights, freeze modes, data pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from sklearn.metrics import roc_curve

import training.train
from classifiers import Pipeline, ViewInput
from classifiers.body_parts import BODY_PARTS
from classifiers.decoding.imaging import load_image_file, resize_image
from classifiers.preprocessing import preprocess_batch
from classifiers.repository.manifest import read_manifest
from mura.studies import find_studies
from training.backbones import BACKBONES, build_backbone, build_model, set_freeze_mode
from training.data import make_dataset, patient_of, split_by_patient, task_examples
from training.evaluation import youden_threshold
from training.losses import WeightedBinaryCrossentropy, balanced_class_weights, prevalence_weights
from training.notop import load_notop_weights
from training.synthetic import generate_dataset
from training.train import compile_for_task
from training.train import main as train_main


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MURA-layout synthetic set: 28 train and 14 valid studies, every part in both."""
    root = tmp_path_factory.mktemp("synthetic") / "SYNTH"
    generate_dataset(root, 28, seed=5, split="train")
    generate_dataset(root, 14, seed=5, split="valid")
    return root


# Trained as the CLI trains (Keras' tf.function graphs): the router and the expert the test reads closely.
GRAPH_TRAINED = ("router", "XR_WRIST")


@pytest.fixture(scope="module")
def trained_repository(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The router and seven experts trained for one epoch at 32x32 by the CLI.

    The other six experts run eagerly: the same steps without tracing Keras' train, test and predict
    graphs, which is most of a tiny model's epoch (each graph is traced once per model).
    """
    out = tmp_path_factory.mktemp("repository")

    def compile_then_maybe_eager(model: keras.Model, task: str, *arguments: object) -> dict | None:
        class_weight = compile_for_task(model, task, *arguments)
        model.run_eagerly = task not in GRAPH_TRAINED
        return class_weight

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.train, "compile_for_task", compile_then_maybe_eager)
        exit_code = train_main(["--data", str(synthetic_root), "--task", "all", "--backbone", "smallcnn",
                                "--input-size", "32", "--epochs", "1", "--batch-size", "16", "--out", str(out),
                                "--seed", "3", "--data-name", "unit-test"])
    assert exit_code == 0
    return out


def test_one_epoch_run_writes_a_repository_the_pipeline_loads(trained_repository: Path, synthetic_root: Path) -> None:
    manifest = read_manifest(trained_repository)  # validates the schema and every sha256
    assert manifest.extra["gate"]["file"] == "gate.npz"  # training fits the out-of-domain gate too
    assert (trained_repository / "gate.npz").is_file()
    assert manifest.router.classes == BODY_PARTS
    assert sorted(manifest.experts) == sorted(BODY_PARTS)
    wrist = manifest.experts["XR_WRIST"]
    assert wrist.files == {"architecture": "XR_WRIST.json", "weights": "XR_WRIST.weights.h5"}
    assert wrist.input_size == (32, 32) and wrist.preprocessing == "tf"
    assert 0.0 <= wrist.threshold <= 1.0
    # The service must not need training code: no optimizer or custom loss recorded in the architecture.
    assert "compile_config" not in json.loads((trained_repository / "XR_WRIST.json").read_text())
    assert wrist.provenance["data"] == "unit-test" and wrist.provenance["epochs"] == 1
    assert set(wrist.provenance["metrics"]["validation"]) >= {"auroc", "kappa", "accuracy"}
    assert (trained_repository / "logs" / "router.csv").read_text().startswith("epoch,")
    assert (trained_repository / "logs" / "XR_WRIST_loss.png").stat().st_size > 1000
    study = find_studies(synthetic_root / "valid")[0]
    views = [ViewInput(path.name, path.read_bytes()) for path in study.image_paths]
    pipeline = Pipeline.load(trained_repository)
    try:
        result = pipeline.predict_study(views)
    finally:
        pipeline.close()
    assert result.body_part in BODY_PARTS and 0.0 <= result.abnormality <= 1.0
    assert result.n_images == len(views)


def test_train_cli_rejects_a_folder_without_studies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "train").mkdir()
    exit_code = train_main(
        ["--data", str(tmp_path), "--task", "router", "--backbone", "smallcnn", "--out", str(tmp_path)]
    )
    assert exit_code == 2
    assert "error:" in capsys.readouterr().err


def test_prevalence_weights_follow_the_mura_paper() -> None:
    # 2 abnormal (A), 3 normal (N): w1 = N / (A + N) = 0.6, w0 = A / (A + N) = 0.4.
    assert prevalence_weights([1, 0, 0, 1, 0]) == pytest.approx((0.6, 0.4))
    with pytest.raises(ValueError, match="both classes"):
        prevalence_weights([0, 0, 0])


def test_weighted_binary_crossentropy_matches_a_hand_computation() -> None:
    labels = [1, 0, 0, 1, 0]
    predictions = [0.9, 0.2, 0.6, 0.3, 0.05]
    w_positive, w_negative = 0.6, 0.4
    terms = [
        -(w_positive * math.log(p) if y == 1 else w_negative * math.log(1 - p))
        for y, p in zip(labels, predictions, strict=True)
    ]
    loss = WeightedBinaryCrossentropy(w_positive, w_negative)
    value = float(loss(np.array(labels, "float32").reshape(-1, 1), np.array(predictions, "float32").reshape(-1, 1)))
    assert value == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_balanced_class_weights_upweight_the_rare_class() -> None:
    weights = balanced_class_weights([0, 0, 0, 1], num_classes=2)
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    with pytest.raises(ValueError, match=r"\[2\]"):
        balanced_class_weights([0, 1], num_classes=3)


def _write_keras2_notop_file(path: Path, full_model: bool) -> None:
    """Write a MobileNet notop file the way Keras 2 wrote ImageNet (weights) or RadImageNet (model) files."""
    import tf_keras

    tf_keras.utils.set_random_seed(11)
    backbone = tf_keras.applications.MobileNet(include_top=False, weights=None, input_shape=(64, 64, 3))
    if full_model:
        backbone.save(path)
    else:
        backbone.save_weights(path)


@pytest.fixture(scope="module")
def keras2_notop_file(tmp_path_factory: pytest.TempPathFactory):
    """Write each kind of Keras 2 notop file once per module (read only): full_model -> path."""
    written: dict[bool, Path] = {}

    def notop_file(full_model: bool) -> Path:
        if full_model not in written:
            written[full_model] = tmp_path_factory.mktemp("notop") / "mobilenet_notop.h5"
            _write_keras2_notop_file(written[full_model], full_model)
        return written[full_model]

    return notop_file


@pytest.mark.parametrize("full_model", [False, True], ids=["imagenet_weights_file", "radimagenet_model_file"])
def test_notop_weights_file_is_loaded_by_layer_name(keras2_notop_file, full_model: bool) -> None:
    path = keras2_notop_file(full_model)
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if full_model else handle
        stored_kernel = np.array(group["conv_pw_13"]["conv_pw_13"]["kernel:0"])
    keras.utils.set_random_seed(0)
    random_model = build_model("mobilenet", (64, 64), 1)
    keras.utils.set_random_seed(0)
    pretrained_model = build_model("mobilenet", (64, 64), 1, weights_path=str(path))
    random_kernel = random_model.get_layer("mobilenet_1.00_64").get_layer("conv_pw_13").get_weights()[0]
    loaded_kernel = pretrained_model.get_layer("mobilenet_1.00_64").get_layer("conv_pw_13").get_weights()[0]
    assert not np.allclose(random_kernel, stored_kernel)
    np.testing.assert_array_equal(loaded_kernel, stored_kernel)


def test_notop_weights_for_another_backbone_are_refused(keras2_notop_file, tmp_path: Path) -> None:
    path = keras2_notop_file(False)
    backbone = build_backbone("smallcnn", (64, 64, 3))
    with pytest.raises(ValueError, match="another architecture"):
        load_notop_weights(backbone, path)
    with pytest.raises(FileNotFoundError, match="--weights"):
        load_notop_weights(backbone, tmp_path / "missing_notop.h5")


@pytest.mark.parametrize(
    ("freeze", "first_trainable"),
    [("none", 0), ("all", 20), ("top10", 10), ("from:5", 5), ("FROM:0", 0)],
)
def test_freeze_modes_set_trainable_layers(freeze: str, first_trainable: int) -> None:
    backbone = build_backbone("smallcnn", (32, 32, 3))
    assert len(backbone.layers) == 20  # input, stem conv/bn/relu, 4 blocks of conv/bn/relu/pool
    set_freeze_mode(backbone, freeze)
    assert [layer.trainable for layer in backbone.layers] == [index >= first_trainable for index in range(20)]


def test_frozen_backbone_leaves_only_the_head_trainable() -> None:
    model = build_model("smallcnn", (32, 32), 7, freeze="all")
    assert [variable.path for variable in model.trainable_variables] == ["predictions/kernel", "predictions/bias"]


@pytest.mark.parametrize("freeze", ["some", "from:x", "from:999", "top5"])
def test_bad_freeze_mode_is_refused(freeze: str) -> None:
    with pytest.raises(ValueError, match="(?i)freeze mode"):
        set_freeze_mode(build_backbone("smallcnn", (32, 32, 3)), freeze)


def test_unknown_backbone_error_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="densenet169") as caught:
        build_backbone("densenet999", (64, 64, 3))
    assert all(name in str(caught.value) for name in BACKBONES)


def test_youden_threshold_maximises_j_like_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 60)
    scores = np.clip(labels * 0.3 + rng.normal(0.4, 0.2, 60), 0, 1)
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    best_j = float(np.max(true_positive_rate - false_positive_rate))
    threshold = youden_threshold(labels, scores)
    predicted = scores >= threshold
    j = predicted[labels == 1].mean() - predicted[labels == 0].mean()
    assert j == pytest.approx(best_j)


def test_patient_split_keeps_each_patient_on_one_side(synthetic_root: Path) -> None:
    studies = find_studies(synthetic_root / "train")
    train, valid = split_by_patient(studies, 0.25, seed=1)
    train_patients = {patient_of(study) for study in train}
    valid_patients = {patient_of(study) for study in valid}
    assert not train_patients & valid_patients
    assert len(valid_patients) == 7 and len(train) + len(valid) == len(studies)


def test_evaluation_batches_equal_the_service_preprocessing(synthetic_root: Path) -> None:
    examples = task_examples(find_studies(synthetic_root / "valid"), "XR_HAND")
    batch, labels = next(iter(make_dataset(examples, (48, 40), "torch", 64, training=False, binary=True)))
    expected = preprocess_batch(np.stack([resize_image(load_image_file(p), (48, 40)) for p in examples.paths]), "torch")
    np.testing.assert_allclose(batch.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy().reshape(-1), examples.labels)


def test_training_batches_are_augmented_and_in_range(synthetic_root: Path) -> None:
    examples = task_examples(find_studies(synthetic_root / "train"), "router")
    dataset = make_dataset(examples, (32, 32), "tf", 8, training=True, seed=2)
    batch, labels = next(iter(dataset))
    assert batch.shape == (8, 32, 32, 3) and labels.shape == (8,)
    assert -1.0 <= float(np.min(batch)) and float(np.max(batch)) <= 1.0
    plain = make_dataset(examples, (32, 32), "tf", len(examples.paths), training=False)
    plain_batch = next(iter(plain))[0].numpy()
    # Every augmented image differs from every unaugmented one (flip/rotate/shift/zoom were applied).
    assert all(not np.any(np.all(np.isclose(plain_batch, image), axis=(1, 2, 3))) for image in batch.numpy())

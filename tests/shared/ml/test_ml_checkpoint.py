import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from shared.ml.architecture import Architecture
from shared.ml.checkpoint import (
    MODEL_METADATA,
    MODEL_WEIGHTS,
    TRAINER_STATE,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
    save_model,
)
from shared.ml.evaluate import predict_logits
from shared.ml.training import TrainConfig, Trainer


def test_saved_model_predicts_identically(trained_digits: Any, saved_digits_model: Path) -> None:
    loaded = load_model(saved_digits_model)
    x_test = trained_digits.splits.x_test
    assert not loaded.model.training
    assert torch.equal(
        predict_logits(loaded.model, x_test), predict_logits(trained_digits.model, x_test)
    )
    assert loaded.architecture == trained_digits.architecture
    assert loaded.class_names == trained_digits.splits.class_names


def test_model_metadata_describes_the_model(saved_digits_model: Path) -> None:
    metadata = json.loads((saved_digits_model / MODEL_METADATA).read_text())
    assert metadata["parameter_count"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert metadata["torch_version"] == torch.__version__
    assert metadata["extra"] == {"dataset": "digits"}
    assert 0.9 < metadata["metrics"]["val_accuracy"] <= 1
    assert len(metadata["normalization"]["mean"]) == 64
    assert metadata["created_at"].endswith("+00:00")


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_save_model_accepts_fsspec_urls(trained_digits: Any, tmp_path: Path, scheme: str) -> None:
    url = f"file://{tmp_path}/model" if scheme == "file" else f"memory://{tmp_path.name}/model"
    save_model(
        url,
        trained_digits.model,
        trained_digits.architecture,
        trained_digits.splits.normalization,
        class_names=trained_digits.splits.class_names,
    )
    loaded = load_model(url)
    x = trained_digits.splits.x_val
    assert torch.equal(predict_logits(loaded.model, x), predict_logits(trained_digits.model, x))


def test_tampered_weights_are_refused(saved_digits_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / MODEL_METADATA).write_bytes((saved_digits_model / MODEL_METADATA).read_bytes())
    weights = bytearray((saved_digits_model / MODEL_WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF
    (copy / MODEL_WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="checksum"):
        load_model(copy)


def test_missing_model_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=MODEL_METADATA):
        load_model(tmp_path / "nothing-here")


def test_save_model_checks_class_names(trained_digits: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 class names for a model with 10 classes"):
        save_model(
            tmp_path,
            trained_digits.model,
            trained_digits.architecture,
            trained_digits.splits.normalization,
            class_names=["a", "b", "c"],
        )


def test_loading_a_model_leaves_the_rng_alone(saved_digits_model: Path) -> None:
    before = torch.get_rng_state()
    load_model(saved_digits_model)
    assert torch.equal(torch.get_rng_state(), before)


class _NotAllowed:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("arbitrary code ran",))


def _checkpoint_of(trained_digits: Any) -> Any:
    arch: Architecture = trained_digits.architecture
    trainer = Trainer(trained_digits.model, arch, trained_digits.splits, TrainConfig(epochs=1))
    return trainer.checkpoint()


def test_checkpoint_round_trip(trained_digits: Any, tmp_path: Path) -> None:
    checkpoint = _checkpoint_of(trained_digits)
    save_checkpoint(f"file://{tmp_path}", checkpoint)
    restored = load_checkpoint(tmp_path)
    assert restored.architecture == checkpoint.architecture
    assert restored.config == checkpoint.config
    assert torch.equal(restored.rng_state, checkpoint.rng_state)
    model = model_from_checkpoint(restored)
    x = trained_digits.splits.x_val
    assert torch.equal(predict_logits(model, x), predict_logits(trained_digits.model, x))


def test_checkpoint_state_is_never_unpickled_freely(trained_digits: Any, tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _checkpoint_of(trained_digits))
    torch.save({"epoch": 0, "payload": _NotAllowed()}, tmp_path / TRAINER_STATE)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path)


def test_a_regression_model_keeps_its_target_normalization(
    saved_diabetes_model: Path, trained_diabetes: Any, tmp_path: Path
) -> None:
    loaded = load_model(saved_diabetes_model)
    assert loaded.architecture.task == "regression" and loaded.class_names == []
    assert loaded.target_normalization == trained_diabetes.splits.target_normalization
    splits = trained_diabetes.splits
    with pytest.raises(ValueError, match="target normalization belongs with a regression"):
        save_model(
            tmp_path / "no-target",
            trained_diabetes.model,
            trained_diabetes.architecture,
            splits.normalization,
            class_names=[],
        )

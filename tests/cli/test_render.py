"""What the CLI prints of a workflow and a served model's answer, for either task."""

from __future__ import annotations

from rich.console import Console

from cli.follow import _training_text
from cli.render import predictions_table, print_result, workflow_view


def rendered(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_classifiers_answer_is_a_table_of_labels_and_confidences() -> None:
    answer = {"predictions": [3], "labels": ["3"], "probabilities": [[0.1, 0.9]]}
    text = rendered(predictions_table(answer, [[0.0]]))
    assert "label" in text and "confidence" in text and "0.900" in text


def test_a_regression_answer_is_a_table_of_values() -> None:
    answer = {"predictions": [{"value": 151.234}, {"value": 87.5}], "model_id": "m"}
    text = rendered(predictions_table(answer, [[0.0], [1.0]]))
    assert "value" in text and "151.2" in text and "87.5" in text
    assert "confidence" not in text


def test_progress_and_results_name_the_score_of_the_task() -> None:
    progress = {"epoch": 3, "epochs": 10, "train_loss": 0.41, "val_r2": 0.512}
    assert "val_r2 0.512" in _training_text(progress)
    assert "val_acc" not in _training_text(progress)
    workflow = {
        "status": "completed",
        "current_phase": 5,
        "phases": [],
        "progress": progress,
        "result": {"served_url": "http://x", "test_r2": 0.45, "test_rmse": 55.1},
    }
    view = rendered(workflow_view(workflow))
    assert "val_r2 0.512" in view and "test_r2: 0.45" in view
    console = Console(width=200, record=True)
    print_result(console, workflow)
    assert "test R² 0.45" in console.export_text()

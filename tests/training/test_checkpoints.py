"""Weights that do not fit say so in one line; training always leaves a model and records its metrics."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events

from medattn3d.errors import InputError
from medattn3d.networks import AttentionUNet
from medattn3d.training import BestModelSaver, FinalValidation, load_weights


def _net(in_channels: int = 1, classes: int = 4, channels=(4, 8, 16)) -> torch.nn.Module:
    strides = [2] * (len(channels) - 1)
    return AttentionUNet(3, in_channels, classes, channels=channels, strides=strides, deep_supervision=True)


def test_matching_weights_load_from_a_state_dict_or_a_model_entry(tmp_path):
    source, target = _net(), _net()
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": source.state_dict(), "optimizer": {}}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        load_weights(target, tmp_path / name)
        pairs = zip(source.state_dict().values(), target.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        (_net(classes=2), "checkpoint predicts 2 classes, the bundle 4"),
        (_net(in_channels=3), "checkpoint takes 3 input channels, the bundle 1"),
        (_net(in_channels=3, classes=2), "checkpoint predicts 2 classes, the bundle 4; it takes 3 input channels"),
        (_net(channels=(4, 8, 16, 32)), "was trained for a different network"),
    ],
)
def test_mismatched_weights_fail_in_one_line_saying_what_differs(tmp_path, saved, message):
    torch.save(saved.state_dict(), tmp_path / "model.pt")
    with pytest.raises(InputError) as caught:
        load_weights(_net(), tmp_path / "model.pt")
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'model.pt'}: ") and message in text and "\n" not in text


def test_a_missing_or_foreign_file_is_named(tmp_path):
    with pytest.raises(InputError, match="no trained weights"):
        load_weights(_net(), tmp_path / "model.pt")
    (tmp_path / "model.pt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        load_weights(_net(), tmp_path / "model.pt")


class _Evaluator(Engine):
    """MONAI's ``Evaluator.run(global_epoch)`` contract on a plain ignite Engine (one batch per run)."""

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        self.state.max_epochs = global_epoch
        self.state.epoch = global_epoch - 1
        self.state.iteration = 0
        self.state.epoch_length = 1
        super().run([0])


def _validator(metrics: dict) -> Engine:
    engine = _Evaluator(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics = dict(metrics)
        e.state.key_metric_name = "val_mean_dice"

    return engine


def test_best_model_writes_the_weights_and_per_class_dice_into_the_metadata(tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"version": "0.2.0"}))
    validator = _validator({"val_mean_dice": 0.5, "val_dice_per_class": torch.tensor([0.25, 0.75])})
    BestModelSaver(tmp_path / "models", _net(), metadata_file=metadata,
                   class_names={"0": "background", "1": "liver", "2": "spleen"}).attach(validator)  # fmt: skip
    validator.run(1)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert json.loads(metadata.read_text(encoding="utf-8")) == {
        "version": "0.2.0",
        "eval_metrics": {"val_mean_dice": 0.5, "epoch": 1, "val_dice_per_class": {"liver": 0.25, "spleen": 0.75}},
    }


def test_training_shorter_than_the_validation_interval_still_validates_once(tmp_path):
    validator = _validator({"val_mean_dice": float("nan")})  # no foreground anywhere: still a model
    BestModelSaver(tmp_path, _net()).attach(validator)
    trainer = Engine(lambda e, b: None)
    FinalValidation(validator, interval=5).attach(trainer)
    trainer.run([0], max_epochs=2)
    assert (tmp_path / "model.pt").is_file()
    assert validator.state.epoch == 2  # numbered as the trainer's last epoch


def test_no_extra_validation_when_the_schedule_ended_on_one(tmp_path):
    runs = []
    validator = _Evaluator(lambda e, b: None)
    validator.add_event_handler(Events.STARTED, lambda e: runs.append(1))
    trainer = Engine(lambda e, b: None)
    FinalValidation(validator, interval=2).attach(trainer)
    trainer.run([0], max_epochs=4)
    assert runs == []


def test_a_resumed_validator_starts_from_the_saved_best(tmp_path):
    """After a resume, a worse validation is not announced as a new best, and the best stays the saved one's."""
    first = _validator({"val_mean_dice": 0.9775})
    BestModelSaver(tmp_path, _net()).attach(first)
    first.run(40)
    weights = (tmp_path / "model.pt").read_bytes()
    resumed = _validator({"val_mean_dice": 0.9769})
    resumed.state.best_metric, resumed.state.best_metric_epoch = -1, -1  # what MONAI's evaluator starts from
    BestModelSaver(tmp_path, _net()).attach(resumed)
    resumed.run(41)
    assert (resumed.state.best_metric, resumed.state.best_metric_epoch) == (0.9775, 40)
    assert (tmp_path / "model.pt").read_bytes() == weights

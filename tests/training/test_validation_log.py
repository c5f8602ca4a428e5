"""ValidationLog: one readable line per validation, classes named from the manifest's labels."""

import logging

import torch
from ignite.engine import Engine

from medattn3d.training.report import ValidationLog, foreground_names


def _validator(metrics: dict, best: float = 0.81, best_epoch: int = 5) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 10
    engine.state.metrics = metrics
    engine.state.key_metric_name = "val_mean_dice"
    engine.state.best_metric = best
    engine.state.best_metric_epoch = best_epoch
    return engine


def test_manifest_labels_name_the_foreground_classes_in_label_order():
    assert foreground_names({"0": "background", "2": "spleen", "1": "liver"}) == ["liver", "spleen"]
    assert foreground_names(["a", "b"]) == ["a", "b"] and foreground_names(None) == []


def test_line_names_each_class_and_separates_the_metrics(caplog):
    engine = _validator({"val_dice_per_class": torch.tensor([0.738, 0.6359, 0.828]), "val_mean_dice": 0.734})
    log = ValidationLog({"0": "background", "1": "liver", "2": "spleen", "3": "kidney"})
    with caplog.at_level(logging.INFO, logger="medattn3d.training"):
        log(engine)
    assert caplog.messages == [
        "Epoch[10] validation | val_dice_per_class: liver 0.7380, spleen 0.6359, kidney 0.8280 | "
        "val_mean_dice 0.7340 | best val_mean_dice 0.8100 at epoch 5"
    ]


def test_unnamed_or_mismatched_classes_are_numbered():
    engine = _validator({"val_dice_per_class": torch.tensor([0.5, 0.25])})
    assert "val_dice_per_class: class1 0.5000, class2 0.2500" in ValidationLog(["only one"]).format(engine)


def test_a_single_foreground_class_is_named_too():
    engine = _validator({"val_dice_per_class": torch.tensor([0.9123]), "val_mean_dice": 0.9123})
    line = ValidationLog({"0": "background", "1": "spleen"}).format(engine)
    assert "val_dice_per_class: spleen 0.9123 | val_mean_dice 0.9123" in line

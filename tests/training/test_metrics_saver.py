"""NamedMetricsSaver: MONAI's MetricsSaver reports with the bundle's class names as column names."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine, Events

from medattn3d.training import NamedMetricsSaver
from medattn3d.training.report import dice_table

DICE = torch.tensor([[0.5, 0.9], [0.7, 0.6]])  # two cases x two foreground classes


def _evaluate(saver: NamedMetricsSaver) -> None:
    """Two iterations of one case each; the metric and its per-case details set as a Dice metric would."""
    engine = Engine(lambda engine, batch: None)

    @engine.on(Events.EPOCH_COMPLETED)  # registered first, so it runs before the saver
    def _metrics(engine: Engine) -> None:
        engine.state.metrics = {"val_mean_dice": float(DICE.mean())}
        engine.state.metric_details = {"val_mean_dice": DICE}

    saver.attach(engine)

    batches = [[{"filename_or_obj": f"case_{i}.nii.gz"}] for i in range(2)]
    engine.run(batches, max_epochs=1)


def _rows(path):
    with open(path, encoding="utf-8") as stream:
        return list(csv.reader(stream))


def test_columns_are_named_after_the_foreground_classes(tmp_path):
    names = {"0": "background", "1": "liver", "2": "left, kidney"}
    _evaluate(
        NamedMetricsSaver(
            str(tmp_path),
            metric_details=["val_mean_dice"],
            summary_ops="*",
            class_names=names,
            batch_transform=lambda batch: batch,
        )
    )
    raw = _rows(tmp_path / "val_mean_dice_raw.csv")
    assert raw[0] == ["filename", "liver", "left_ kidney", "mean"]
    assert raw[1][0] == "case_0.nii.gz" and [float(v) for v in raw[1][1:]] == [0.5, 0.9, 0.7]
    summary = _rows(tmp_path / "val_mean_dice_summary.csv")
    assert [row[0] for row in summary] == ["class", "liver", "left_ kidney", "mean"]
    table = dict(dice_table(tmp_path, names))
    assert table["liver"] == 0.6 and table["left_ kidney"] == 0.75


def test_names_that_do_not_match_the_columns_keep_monais_defaults(tmp_path):
    _evaluate(
        NamedMetricsSaver(
            str(tmp_path),
            metric_details=["val_mean_dice"],
            summary_ops="mean",
            class_names=["liver"],
            batch_transform=lambda batch: batch,
        )
    )
    assert _rows(tmp_path / "val_mean_dice_raw.csv")[0] == ["filename", "class0", "class1", "mean"]
    # an evaluation written with MONAI's names still reads back under the class names
    assert dice_table(tmp_path, {"1": "liver", "2": "spleen"})[:2] == [("liver", 0.6), ("spleen", 0.75)]

"""Compose a bundle's config files from common pieces and one architecture's pieces.

Every fact (spatial_dims, channels, classes, spacing, patch, precision, ...) is one top-level id of the file that
needs it, written as a literal; everything else refers to it with ``@id``. ``train.json`` and ``inference.json``
each stand alone (``python -m monai.bundle run --config_file configs/inference.json``); ``evaluate.json``,
``multi_gpu_*.json`` and ``explain.json`` are small override files merged on top of them, as in MONAI's model zoo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medattn3d.planning.templates import Template

TRAIN_IMPORTS = ["$import json", "$import os", "$import torch", "$import ignite", "$import monai", "$import medattn3d"]
RUNTIME_IMPORTS = ["$import medattn3d.data", "$import medattn3d.engine", "$import medattn3d.training"]


@dataclass(frozen=True)
class DataSource:
    """Where the bundle's data is: literal paths for a planned bundle, expressions for the shipped demo ones."""

    dataset_dir: str
    datalist: str
    fold: int | None
    demo: bool = False  # shipped bundles generate the demo dataset on first use


def _datalist(section: str) -> str:
    return f"$medattn3d.data.load_datalist(@datalist, '{section}', @dataset_dir, @fold)"


def _initialize(source: DataSource, *extra: str) -> list[str]:
    steps = ["$medattn3d.engine.tune_cpu_allocator()", *extra]
    if source.demo:
        steps.append("$medattn3d.data.demo.prepare_dataset(@dataset_dir, @datalist)")
    return steps


def common_facts(template: Template, values: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
    """The ids both train.json and inference.json define: paths, device, precision and the planned facts."""
    return {
        "bundle_root": ".",
        "ckpt_dir": "$os.path.join(@bundle_root, 'models')",
        "dataset_dir": source.dataset_dir,
        "datalist": source.datalist,
        "fold": source.fold,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "precision": values["precision"],
        "runtime": values["runtime"],
        "channels_last": True,
        "spatial_dims": template.spatial_dims,
        "in_channels": values["in_channels"],
        "channel_names": values["channel_names"],
        "num_classes": values["num_classes"],
        "class_names": values["class_names"],
        "normalization": values["normalization"],
        "pixdim": values["pixdim"],
        "roi_size": values["roi_size"],
        "sw_batch_size": values["sw_batch_size"],
        "overlap": values["overlap"],
        "network_def": template.architecture.network_def(template.spatial_dims, values),
        "network": "$@network_def.to(@device)",
    }


def preprocessing(stage: str, **extra: Any) -> dict[str, Any]:
    """``segmentation_transforms`` for ``stage`` with the facts by reference."""
    config = {
        "_target_": "medattn3d.data.transforms.segmentation_transforms",
        "stage": stage,
        "spatial_dims": "@spatial_dims",
        "roi_size": "@roi_size",
        "pixdim": "@pixdim",
        "normalization": "@normalization",
        "channels": "@in_channels",
    }
    config.update(extra)
    return config


def window_inferer(template: Template) -> dict[str, Any]:
    """Whole-volume inference: sliding windows in 3D, slice by slice (SliceInferer on the last axis) in 2D, wrapped
    in the precision/channels-last inferer."""
    inner: dict[str, Any] = {
        "_target_": "SlidingWindowInferer" if template.spatial_dims == 3 else "SliceInferer",
        "roi_size": "@roi_size",
        "sw_batch_size": "@sw_batch_size",
        "overlap": "@overlap",
        "mode": "gaussian",
        "sw_device": "@device",
        "device": "@device",
    }
    if template.spatial_dims == 2:
        inner["spatial_dim"] = 2
    return precision_inferer(inner)


def precision_inferer(inner: dict[str, Any]) -> dict[str, Any]:
    return {
        "_target_": "medattn3d.engine.PrecisionInferer",
        "inferer": inner,
        "precision": "@precision",
        "channels_last": "@channels_last",
    }


def load_weights(path: str) -> list[dict[str, Any]]:
    """Handlers that load the trained weights (one-line error when they do not fit) and prepare the network for
    inference (BatchNorm folding, bf16 weights where the precision says so) or hand it to the bundle's ``runtime``
    (OpenVINO, ONNX Runtime, the INT8 IR that ``medattn3d export --format openvino-int8`` writes)."""
    return [
        {
            "_target_": "medattn3d.training.LoadWeights",
            "load_path": path,
            "network": "@network",
            "map_location": "@device",
        },
        {
            "_target_": "medattn3d.engine.PrepareForInference",
            "network": "@network",
            "precision": "@precision",
            "channels_last": "@channels_last",
            "runtime": "@runtime",
            "ir_path": "$os.path.join(@ckpt_dir, 'model_int8.xml')",
        },
    ]


def validation_log() -> dict[str, Any]:
    return {
        "_target_": "StatsHandler",
        "iteration_log": False,
        "epoch_print_logger": {"_target_": "medattn3d.training.report.ValidationLog", "class_names": "@class_names"},
    }


def train_config(template: Template, values: Mapping[str, Any], source: DataSource) -> dict[str, Any]:
    """``train.json``: SupervisedTrainer on random patches, SupervisedEvaluator on whole validation volumes."""
    dice = "$monai.handlers.from_engine(['pred', 'label'])"
    loss_of = "$monai.handlers.from_engine(['loss'], first=True)"
    return {
        "imports": TRAIN_IMPORTS + RUNTIME_IMPORTS + ["$import medattn3d.training.report"],
        **common_facts(template, values, source),
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        # training records the best Dice in metadata.json's eval_metrics; the shipped (demo) bundles keep their
        # committed metadata untouched (a source checkout trains them in place) and record it in models/ only
        "metadata_file": None if source.demo else "$os.path.join(@bundle_root, 'configs', 'metadata.json')",
        "resume": True,
        "seed": 0,
        "num_samples": values["num_samples"],
        "crop_ratios": values["crop_ratios"],
        "max_epochs": values["max_epochs"],
        "val_interval": values["val_interval"],
        "learning_rate": values["learning_rate"],
        "num_workers": 0,
        "cache_rate": 1.0,
        "show_progress": True,  # the caching and epoch bars; `medattn3d train -q` turns them off
        "loss": template.architecture.loss(),
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "params": "$@network.parameters()",
            "lr": "@learning_rate",
            "weight_decay": 1e-05,
        },
        "lr_scheduler": {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "optimizer": "@optimizer",
            "T_max": "@max_epochs",
        },
        "train": {
            "preprocessing": preprocessing(
                "train",
                num_classes="@num_classes",
                num_samples="@num_samples",
                crop_ratios="@crop_ratios",
                class_values="$medattn3d.data.class_values(@class_names)",
            ),
            "dataset": {
                "_target_": "CacheDataset",
                "data": _datalist("training"),
                "transform": "@train#preprocessing",
                "cache_rate": "@cache_rate",
                "num_workers": "@num_workers",
                "progress": "@show_progress",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@train#dataset",
                "batch_size": 1,
                "shuffle": True,
                "num_workers": "@num_workers",
            },
            "inferer": precision_inferer({"_target_": "SimpleInferer"}),
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": False},
                {
                    "_target_": "ValidationHandler",
                    "validator": "@validate#evaluator",
                    "epoch_level": True,
                    "interval": "@val_interval",
                },
                {
                    "_target_": "medattn3d.training.FinalValidation",
                    "validator": "@validate#evaluator",
                    "interval": "@val_interval",
                },
                {
                    "_target_": "medattn3d.training.TrainingCheckpoint",
                    "ckpt_dir": "@ckpt_dir",
                    "save_dict": {"model": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler"},
                    "resume": "@resume",
                },
                {
                    "_target_": "ignite.handlers.ProgressBar",
                    "persist": True,
                    "desc": "train",
                    "disable": "$not @show_progress",
                },
                {
                    "_target_": "StatsHandler",
                    "tag_name": "train_loss",
                    "iteration_log": False,
                    "output_transform": loss_of,
                },
                {
                    "_target_": "TensorBoardStatsHandler",
                    "log_dir": "@output_dir",
                    "tag_name": "train_loss",
                    "output_transform": loss_of,
                },
                {
                    "_target_": "medattn3d.training.report.TrainingReport",
                    "output_dir": "@output_dir",
                    "validator": "@validate#evaluator",
                    "class_names": "@class_names",
                },
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "max_epochs": "@max_epochs",
                "device": "@device",
                "train_data_loader": "@train#dataloader",
                "network": "@network",
                "loss_function": "@loss",
                "optimizer": "@optimizer",
                "inferer": "@train#inferer",
                "train_handlers": "@train#handlers",
                "amp": "$@precision == 'fp16'",
            },
        },
        "validate": {
            "preprocessing": preprocessing(
                "val", num_classes="@num_classes", class_values="$medattn3d.data.class_values(@class_names)"
            ),
            "dataset": {
                "_target_": "CacheDataset",
                "data": _datalist("validation"),
                "transform": "@validate#preprocessing",
                "cache_rate": "@cache_rate",
                "num_workers": "@num_workers",
                "progress": "@show_progress",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@validate#dataset",
                "batch_size": 1,
                "shuffle": False,
                "num_workers": "@num_workers",
            },
            "inferer": window_inferer(template),
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {
                        "_target_": "AsDiscreted",
                        "keys": ["pred", "label"],
                        "argmax": [True, False],
                        "to_onehot": "@num_classes",
                    }
                ],
            },
            "key_metric": {
                "val_mean_dice": {"_target_": "MeanDice", "include_background": False, "output_transform": dice}
            },
            "additional_metrics": {
                "val_dice_per_class": {
                    "_target_": "MeanDice",
                    "include_background": False,
                    "reduction": "mean_batch",
                    "output_transform": dice,
                }
            },
            "handlers": [
                validation_log(),
                {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "iteration_log": False},
                {
                    "_target_": "medattn3d.training.BestModelSaver",
                    "ckpt_dir": "@ckpt_dir",
                    "network": "@network",
                    "resume": "@resume",
                    "metadata_file": "@metadata_file",
                    "class_names": "@class_names",
                },
            ],
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@validate#dataloader",
                "network": "@network",
                "inferer": "@validate#inferer",
                "postprocessing": "@validate#postprocessing",
                "key_val_metric": "@validate#key_metric",
                "val_handlers": "@validate#handlers",
                "additional_metrics": "@validate#additional_metrics",
            },
        },
        "initialize": _initialize(source, "$monai.utils.set_determinism(seed=@seed)"),
        "run": ["$@train#trainer.run()"],
    }


def evaluate_config(source: DataSource) -> dict[str, Any]:
    """``evaluate.json`` (merged onto train.json): the trained model on the validation cases, per-case metrics."""
    return {
        "validate#handlers": [
            *load_weights("$os.path.join(@ckpt_dir, 'model.pt')"),
            validation_log(),
            {
                "_target_": "medattn3d.training.NamedMetricsSaver",
                "save_dir": "@output_dir",
                "class_names": "@class_names",
                "metrics": ["val_mean_dice"],
                "metric_details": ["val_mean_dice"],
                "batch_transform": "$lambda batch: [item['image'].meta for item in batch]",
                "summary_ops": "*",
            },
        ],
        "initialize": _initialize(source, "$monai.utils.set_determinism(seed=@seed)"),
        "run": ["$@validate#evaluator.run()"],
    }


def inference_config(
    template: Template, values: Mapping[str, Any], source: DataSource, name: str = ""
) -> dict[str, Any]:
    """``inference.json``: the test cases (or ``input_paths``) through the network, written in the input's
    geometry by the prediction writer."""
    return {
        "imports": ["$import os", "$import torch", "$import monai", "$import medattn3d", *RUNTIME_IMPORTS],
        **common_facts(template, values, source),
        "checkpoint": "$os.path.join(@ckpt_dir, 'model.pt')",
        "output_dir": "$os.path.join(@bundle_root, 'predictions')",
        "input_paths": "$[item['image'] for item in medattn3d.data.load_datalist(@datalist, 'test', @dataset_dir)]",
        "series_uid": None,
        "output_formats": ["nifti"],
        "save_probabilities": False,
        "preprocessing": preprocessing("infer", series_uid="@series_uid"),
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': path} for path in @input_paths]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": window_inferer(template),
        "postprocessing": {
            "_target_": "medattn3d.outputs.prediction_writer",
            "preprocessing": "@preprocessing",
            "output_dir": "@output_dir",
            "class_names": "@class_names",
            "formats": "@output_formats",
            "save_probabilities": "@save_probabilities",
            "input_paths": "@input_paths",
            "model_info": {"name": name or template.name, "template": template.name},
        },
        "handlers": [*load_weights("@checkpoint"), {"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
        },
        "initialize": _initialize(source),
        "run": ["$@evaluator.run()"],
    }


def explain_config(source: DataSource) -> dict[str, Any]:
    """``explain.json`` (merged onto inference.json): attention maps of the validation cases."""
    return {
        "output_dir": "$os.path.join(@bundle_root, 'explain')",
        "explain_cases": _datalist("validation"),
        "input_paths": "$[item['image'] for item in @explain_cases]",
        # matched by file, so input_paths given on the command line never take another case's labels
        "label_paths": "$medattn3d.explain.labels_for(@input_paths, @explain_cases)",
        "label_preprocessing": preprocessing("val", class_values="$medattn3d.data.class_values(@class_names)"),
        "explainer": {
            "_target_": "medattn3d.explain.AttentionExplainer",
            "network": "@network",
            "preprocessing": "@preprocessing",
            "inferer": "@inferer",
            "output_dir": "@output_dir",
            "label_preprocessing": "@label_preprocessing",
            "class_names": "@class_names",
        },
        "initialize": _initialize(
            source,
            "$import medattn3d.explain",
            "$medattn3d.training.load_weights(@network, @checkpoint, @device)",
            "$medattn3d.engine.prepare_for_inference(@network, @precision, @device, @channels_last)",
        ),
        "run": ["$@explainer.run(@input_paths, @label_paths)"],
    }


def _distributed(source: DataSource, section: str, *extra: str) -> dict[str, Any]:
    """The DDP pieces shared by multi_gpu_train.json and multi_gpu_evaluate.json for ``section``."""
    prepare = ["$medattn3d.data.demo.prepare_dataset(@dataset_dir, @datalist) if dist.get_rank() == 0 else None"]
    # training wraps the network in DDP; evaluation needs no gradient sync, and the inference preparation (BatchNorm
    # folding, bf16 weights) changes parameters DDP has registered, so each rank evaluates a plain network
    ddp = {
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$@network_def.to(@device)",
            "device_ids": "$[@device] if torch.cuda.is_available() else None",
        }
    }
    return {
        "device": "$torch.device(f'cuda:{dist.get_rank()}') if torch.cuda.is_available() else torch.device('cpu')",
        **(ddp if section == "train" else {}),
        f"{section}#sampler": {
            "_target_": "DistributedSampler",
            "dataset": f"@{section}#dataset",
            "even_divisible": section == "train",
            "shuffle": section == "train",
        },
        f"{section}#dataloader#sampler": f"@{section}#sampler",
        **({"train#dataloader#shuffle": False} if section == "train" else {}),
        "initialize": [
            "$import torch.distributed as dist",
            "$dist.is_initialized() or dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$medattn3d.engine.tune_cpu_allocator()",
            "$monai.utils.set_determinism(seed=@seed)",
            *(prepare if source.demo else []),
            "$dist.barrier()",
        ],
        "run": list(extra),
        "finalize": [
            "$dist.is_initialized() and dist.barrier()",
            "$dist.is_initialized() and dist.destroy_process_group()",
        ],
    }


def multi_gpu_train_config(source: DataSource) -> dict[str, Any]:
    """``multi_gpu_train.json`` (merged onto train.json): DDP, one process per GPU (gloo on CPU)."""
    return _distributed(source, "train", "$@train#trainer.run()")


def multi_gpu_evaluate_config(source: DataSource) -> dict[str, Any]:
    """``multi_gpu_evaluate.json`` (merged onto train.json + evaluate.json): validation cases shared by processes."""
    return _distributed(source, "validate", "$@validate#evaluator.run()")


def bundle_configs(
    template: Template, values: Mapping[str, Any], source: DataSource, name: str = ""
) -> dict[str, dict[str, Any]]:
    """Every JSON config file of a bundle ``name``, by file name (metadata.json is written by :mod:`.metadata`)."""
    return {
        "train.json": train_config(template, values, source),
        "evaluate.json": evaluate_config(source),
        "inference.json": inference_config(template, values, source, name),
        "explain.json": explain_config(source),
        "multi_gpu_train.json": multi_gpu_train_config(source),
        "multi_gpu_evaluate.json": multi_gpu_evaluate_config(source),
    }


LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

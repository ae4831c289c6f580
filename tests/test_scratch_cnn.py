"""The config-described scratch CNN: layers, parameter counts, bad settings; the CBIS-DDSM and
IDC experiment files train one tiny epoch on generated data."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from breastcls.data.readers import DataError
from breastcls.loggers import finish_wandb
from breastcls.models.classifier import split_head
from breastcls.models.scratch_cnn import build_scratch_cnn
from breastcls.train import train
from tests.cbis_ddsm_tree import PATCH_OVERRIDES, write_tree
from tests.conftest import FAST, compose_train
from tests.test_idc import write_patients

QUIET = ["logger=csv", "data.batch_size=8", "evaluation.gradcam=0", "evaluation.plots=false",
         "evaluation.bootstrap.n_resamples=0", "threads=1", "trainer.limit_train_batches=1"]


def test_separable_blocks_are_depthwise_then_pointwise():
    net = build_scratch_cnn([{"filters": 8, "kernel": 3, "separable": True, "batch_norm": True}],
                            in_channels=3)
    convs = [m for m in net.features.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.groups, c.kernel_size, c.out_channels) for c in convs] == [(3, (3, 3), 3),
                                                                         (1, (1, 1), 8)]
    # depthwise 3*9, pointwise 3*8 (no bias: batch norm follows), batch norm 2*8, Linear 8*2+2
    assert sum(p.numel() for p in net.parameters()) == 27 + 24 + 16 + 18


def test_layers_present_only_when_asked():
    plain = build_scratch_cnn([{"filters": 4}], in_channels=1)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.Dropout | nn.MaxPool2d)
                   for m in plain.modules())
    full = build_scratch_cnn([{"filters": 4, "batch_norm": True, "pool": 2, "dropout": 0.25,
                               "repeat": 2, "activation": "elu"}], dense=[5], dense_dropout=0.5)
    kinds = [type(m) for m in full.features[0]]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ELU, nn.Conv2d, nn.BatchNorm2d, nn.ELU,
                     nn.MaxPool2d, nn.Dropout]
    assert [type(m) for m in full.dense] == [nn.Linear, nn.ReLU, nn.Dropout]
    backbone, head = split_head(full)  # the final Linear is the head
    assert isinstance(head, nn.Linear) and head.in_features == 5
    assert backbone(torch.zeros(2, 1, 16, 16)).shape == (2, 5)


def test_flatten_sizes_the_dense_layer_from_the_image():
    net = build_scratch_cnn([{"filters": 6, "pool": 2}], global_pool="flatten", input_size=10,
                            dense=[3])
    assert net.dense[0].in_features == 6 * 5 * 5
    assert net(torch.zeros(1, 1, 10, 10)).shape == (1, 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"blocks": []}, r"model\.backbone\.blocks is empty"),
    ({"blocks": [{"filters": 4, "activation": "relux"}]},
     r"blocks\[0\]\.activation='relux': unknown activation"),
    ({"blocks": [{"filters": 4, "kernal": 3}]}, r"blocks\[0\] has unknown key\(s\) \['kernal'\]"),
    ({"blocks": [{"kernel": 3}]}, r"blocks\[0\]\.filters is missing"),
    ({"blocks": [{"filters": 4, "dropout": 1.5}]}, r"blocks\[0\]\.dropout=1\.5"),
    ({"blocks": [{"filters": 4}], "global_pool": "flatten"}, r"needs model\.backbone\.input_size"),
    ({"blocks": [{"filters": 4, "pool": 4}] * 3, "global_pool": "flatten", "input_size": 16},
     r"shrink a 16-px image"),
    ({"blocks": [{"filters": 4}], "global_pool": "mean"}, r"global_pool='mean'"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        build_scratch_cnn(**kwargs)


# Xception: the study counts 16M; the network has 20.8M with a 2-class head (Keras's Xception,
# 20.9M, also counts BatchNorm's running statistics).
@pytest.mark.parametrize(("experiment", "study_parameters"), [
    ("idc_initial_cnn", 1.2e6), ("idc_own_cnn", 2.7e6), ("idc_xception", 20.8e6)])
def test_idc_networks_have_the_study_sizes(experiment, study_parameters, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    count = sum(p.numel() for p in instantiate(cfg.model).parameters())
    assert abs(count - study_parameters) / study_parameters < 0.05


def _train(overrides: list[str], tmp_path) -> dict[str, float]:
    cfg = compose_train([*FAST, *QUIET, f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
                        tmp_path / "run")
    try:
        return train(cfg)
    finally:
        finish_wandb()


@pytest.mark.parametrize("experiment", ["cbis_ddsm_scratch_basic", "cbis_ddsm_mass_calc_model10",
                                        "cbis_ddsm_benign_malignant_model7"])
def test_cbis_ddsm_experiments_train(experiment, tmp_path_factory, tmp_path):
    root = write_tree(tmp_path_factory.mktemp("cbis") / "cbis_ddsm")
    metrics = _train([f"experiment={experiment}", f"data.root={root}",
                      "data.split.val_fraction=0.3", *PATCH_OVERRIDES], tmp_path)
    assert 0 <= metrics["test/acc"] <= 1


@pytest.mark.parametrize("experiment", ["idc_initial_cnn", "idc_own_cnn", "idc_xception"])
def test_idc_experiments_train(experiment, tmp_path):
    root = write_patients(tmp_path / "idc")
    metrics = _train([f"experiment={experiment}", f"data.root={root}",
                      "data.split.test_fraction=0.25"], tmp_path)
    assert 0 <= metrics["test/acc"] <= 1


@pytest.mark.parametrize("experiment", ["idc_initial_cnn", "idc_own_cnn", "idc_xception"])
def test_each_idc_row_has_an_unweighted_twin(experiment, tmp_path):
    weighted = compose_train([f"experiment={experiment}"], tmp_path)
    plain = compose_train([f"experiment={experiment}_unweighted"], tmp_path)
    assert weighted.model.class_weights == "balanced" and plain.model.class_weights is None
    plain.model.class_weights, plain.tags = "balanced", weighted.tags
    assert plain == weighted

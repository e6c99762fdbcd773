"""The one fit path: ``glimpse train``, the studies and the tuner all fit through ``training.fit.fit``, and the
default input size is defined once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import studies.chapter
import studies.localization
import studies.tuning
import training.fit
import training.train
from training.fit import FitResult, TrainConfig, default_image_size

REPO = Path(__file__).resolve().parents[2]
FIT_CALLERS = (training.train, studies.chapter, studies.tuning, studies.localization)


def _python_files() -> list[Path]:
    return [p for folder in ("training", "studies") for p in sorted((REPO / folder).rglob("*.py"))]


def test_default_image_size_is_defined_once():
    definitions = [
        p.relative_to(REPO).as_posix()
        for p in [*_python_files(), *sorted((REPO / "glimpse").rglob("*.py"))]
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "default_image_size"
    ]
    assert definitions == ["training/fit.py"]
    assert training.train.default_image_size is default_image_size
    for module in (studies.chapter, studies.tuning):  # they use training's, with their own sizes as parameters
        assert getattr(module, "default_image_size", default_image_size) is default_image_size
        assert "default_image_size" not in module.__all__
    assert default_image_size("tuxpaint", "efficientnet_lite0") == 160
    assert default_image_size("tuxpaint", "scratch") == 64
    assert default_image_size("fashion_mnist", "scratch_bn") == 28
    # The studies' smaller runs are an explicit parameter, not a second default.
    assert default_image_size("tuxpaint", "resnet50", pretrained_size=studies.chapter.STUDY_IMAGE_SIZE) == 128
    assert default_image_size("tuxpaint", "scratch", pretrained_size=128) == 64


def _fit_calls(tree: ast.AST, scope: str = "<module>") -> set[str]:
    """Names of the innermost functions that call ``<something>.fit(...)`` (``super().fit`` aside)."""
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found |= _fit_calls(node, node.name)
            continue
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fit"
                and not (isinstance(node.func.value, ast.Call) and getattr(node.func.value.func, "id", "") == "super")):
            found.add(scope)
        found |= _fit_calls(node, scope)
    return found


def test_no_other_fit_loop_in_training_or_studies():
    """Keras' ``fit`` is called in training/fit.py only, besides places that are not training runs of ours: the
    pipeline and recipe-epoch benchmarks time single steps, and AutoKeras fits the models it searches."""
    allowed = {("training/train.py", "pipeline_benchmark"), ("training/train.py", "timed"),
               ("training/train.py", "recipe_epoch_benchmark"), ("studies/tuning.py", "_autokeras_search")}
    found = {
        (p.relative_to(REPO).as_posix(), name)
        for p in _python_files()
        if p.relative_to(REPO).as_posix() != "training/fit.py"
        for name in _fit_calls(ast.parse(p.read_text()))
    }
    assert found <= allowed, found - allowed


def test_callers_use_the_one_fit_function():
    for module in FIT_CALLERS:
        assert module.fit is training.fit.fit, module.__name__
    assert not hasattr(studies.chapter, "RunParams")


@pytest.mark.slow
def test_train_studies_and_tuner_all_go_through_fit(monkeypatch, tmp_path):
    calls: list[str] = []
    real = training.fit.fit

    def counting(name: str):
        def fit(config: TrainConfig, data: training.fit.FitData, **kwargs) -> FitResult:
            assert isinstance(config, TrainConfig)
            calls.append(name)
            return real(config, data, **kwargs)

        return fit

    for module in FIT_CALLERS:
        monkeypatch.setattr(module, "fit", counting(module.__name__.split(".")[-1]))
    tiny = TrainConfig(dataset="tuxpaint", model="scratch", image_size=32, epochs=1, batch_size=16, max_examples=16,
                       seed=3, logdir=str(tmp_path / "runs"), export_dir=str(tmp_path / "models"))

    training.train.train(tiny, export=False, verbose=0)
    assert calls == ["train"]

    study = studies.chapter.StudyConfig("batch-size", tiny, tmp_path / "study", variants=("8", "16"),
                                        deterministic=False, verbose=0, progress=False)
    result = studies.chapter.execute_study(study)
    assert calls == ["train", "chapter", "chapter"]
    assert [r.params.batch_size for r in result.runs] == [8, 16]

    tune = studies.tuning.TuneConfig(out=tmp_path / "tune", base=tiny, max_trials=1, export=False,
                                     deterministic=False, verbose=0)
    studies.tuning.execute_tune(tune)
    assert calls == ["train", "chapter", "chapter", "tuning"]


def test_a_dataset_trains_with_its_recipe_where_flags_are_not_given():
    from glimpse.cli import build_parser
    from training.fit import recipe_config
    from training.recipes import DATASET_RECIPES

    fashion = recipe_config("fashion_mnist")
    assert (fashion.model, fashion.epochs, fashion.batch_size, fashion.lr) == ("scratch_bn", 25, 256, 2e-3)
    assert (fashion.lr_schedule, fashion.augment, fashion.dropout) == ("cosine", "flip", 0.3)
    assert fashion.size == 28
    # a flag given wins over the recipe; None is "not given"
    short = recipe_config("fashion_mnist", epochs=2, model=None, augment="none")
    assert (short.model, short.epochs, short.augment, short.batch_size) == ("scratch_bn", 2, "none", 256)
    # the recipe belongs to its model: another model gets TrainConfig's defaults and the flags given
    assert recipe_config("fashion_mnist", model="scratch", epochs=3) == TrainConfig(
        dataset="fashion_mnist", model="scratch", epochs=3)
    assert recipe_config("fashion_mnist", model="scratch_bn") == fashion
    # Tux Paint's recipe: Lite2 at 300 px, early stopping on the loss, the rest TrainConfig's defaults; a dataset
    # without one gets the defaults
    assert recipe_config("tuxpaint") == TrainConfig(dataset="tuxpaint", model="efficientnet_lite2", image_size=300,
                                                    early_stopping="loss")
    assert recipe_config("tuxpaint", early_stopping="accuracy").early_stopping == "accuracy"  # a flag given wins
    assert recipe_config("tuxpaint", model="efficientnet_lite0") == TrainConfig(dataset="tuxpaint")
    assert recipe_config("folder:/photos") == TrainConfig(dataset="folder:/photos")
    # the command line leaves the recipe's flags unset unless given
    args = build_parser(["train"]).parse_args(["train", "--dataset", "fashion_mnist", "--lr", "0.01"])
    flags = {k: getattr(args, k) for k in DATASET_RECIPES["fashion_mnist"]}
    assert flags == {**dict.fromkeys(DATASET_RECIPES["fashion_mnist"]), "lr": 0.01}

"""One-batch smoke training per loss on a tiny class-folder set cut from the shipped scenes (all CI trains),
resuming, the labelled-polygon dataset, and `geosearch train` / `geosearch evaluate`."""

import dataclasses
import json

import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224077, LANDSAT8_224078
from geosearch.encoder.checkpoint import load_checkpoint
from geosearch.errors import GeosearchError
from geosearch.tiling import TilingOptions, plan_grid
from hostile import HOSTILE_SETTINGS
from training.baselines import ALL_LOSSES
from training.datasets import ClassFolders, PolygonTiles, stratified_split
from training.train import TrainConfig, train

SCENES = {"aerial": AERIAL_3857, "landsat7": LANDSAT7_RGB, "landsat8a": LANDSAT8_224077, "landsat8b": LANDSAT8_224078}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """4 classes (one per shipped scene) × 8 real 64-px tiles, as PNG files in class folders."""
    root = tmp_path_factory.mktemp("folders")
    tiling = TilingOptions(tile_size=64)
    for name, path in SCENES.items():
        (root / name).mkdir()
        with tiling.open(str(path)) as scene:
            grid = plan_grid(scene, tiling)
            from geosearch.tiling import read_tiles

            kept = [t for t in read_tiles(scene, grid) if t.valid_fraction == 1][:8]
        for i, tile in enumerate(kept):
            Image.fromarray(tile.pixels.transpose(1, 2, 0)).save(root / name / f"{i}.png")
    return root


TINY = {"embedding_dim": 16, "input_size": 64, "classes_per_batch": 4, "per_class": 3, "batches_per_epoch": 1,
        "lr_backbone": 1e-3, "lr_head": 1e-2, "warmup_epochs": 0}


def _config(folders, out, loss: str, **changes) -> TrainConfig:
    settings = {"backbone": "resnet18", "weights": None, "epochs": 1, "workers": 0, **TINY}
    return TrainConfig(dataset=str(folders), out=str(out), loss=loss, **settings | changes)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_one_batch_of_training_per_loss(folders, tmp_path, loss):
    result = train(_config(folders, tmp_path / "run", loss))
    assert len(result.losses) == 1 and np.isfinite(result.losses[0])
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.metadata["training"]["loss"] == loss and checkpoint.config.dim == 16
    assert 0 < result.retrieval.map <= 1 and result.retrieval.queries == 16
    written = json.loads(result.report_json.read_text())
    assert written["map"] == result.retrieval.map and set(written["map_per_class"]) == set(SCENES)


def test_training_changes_the_weights_and_resumes(folders, tmp_path):
    config = _config(folders, tmp_path / "run", "srl", epochs=2)
    first = train(config)
    initial = load_checkpoint(train(_config(folders, tmp_path / "zero", "srl", lr_backbone=0.0, lr_head=0.0))
                              .checkpoint)
    trained = load_checkpoint(first.checkpoint)
    assert trained.model_id != initial.model_id
    again = train(config)  # the state says both epochs are done: nothing more is trained
    assert again.losses == first.losses and load_checkpoint(again.checkpoint).model_id == trained.model_id
    saved = {name: (tmp_path / "run" / name).read_bytes() for name in ("state.pt", "split.json")}
    with pytest.raises(GeosearchError, match=r"state\.pt was saved by a run with other settings \(epochs 2 → 3; "
                                             r"split_seed 0 → 1\); give this run another `out`"):
        train(_config(folders, tmp_path / "run", "srl", epochs=3, split_seed=1))
    assert all((tmp_path / "run" / name).read_bytes() == data for name, data in saved.items()), "nothing written"


def test_a_run_of_no_epochs_refuses_other_settings_too(folders, tmp_path):
    """A run that only whitens (epochs 0) records its settings as a training run does: its model is not written
    over by a run of other settings."""
    first = train(_config(folders, tmp_path / "run", "srl", epochs=0))
    assert first.losses == [] and torch.load(tmp_path / "run" / "state.pt", weights_only=False)["epoch"] == 0
    model = first.checkpoint.read_bytes()
    with pytest.raises(GeosearchError, match=r"state\.pt was saved by a run with other settings \(seed 0 → 1\)"):
        train(_config(folders, tmp_path / "run", "srl", epochs=0, seed=1))
    assert first.checkpoint.read_bytes() == model


def test_a_setting_added_later_at_its_default_keeps_saved_states_resumable(folders, tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Later(TrainConfig):
        added_later: int = 3
        added_list: list = dataclasses.field(default_factory=list)

    config = _config(folders, tmp_path / "run", "srl")
    saved, settings = config.settings(), dataclasses.asdict(config)
    assert Later(**settings).changes_from(saved) == []
    assert Later(**settings, added_later=4, added_list=[1]).changes_from(saved) == ["added_later 3 → 4",
                                                                                    "added_list [] → [1]"]
    assert dataclasses.replace(config, lr_head=0.5, workers=3).changes_from(saved) == ["lr_head 0.01 → 0.5"]


def test_a_state_saved_before_settings_were_recorded_resumes_by_its_digest(folders, tmp_path):
    from training.train import _saved_state

    config, path = _config(folders, tmp_path / "run", "srl"), tmp_path / "state.pt"
    torch.save({"digest": config.digest(), "epoch": 1}, path)
    assert _saved_state(path, config)["epoch"] == 1
    with pytest.raises(GeosearchError, match="other settings \\(which ones, the state does not record\\)"):
        _saved_state(path, dataclasses.replace(config, epochs=2))


def test_split_is_stratified_and_fixed():
    labels = np.repeat(np.arange(7), 400)
    train_idx, test_idx = stratified_split(labels, 0.5, seed=0)
    assert len(train_idx) == len(test_idx) == 1400 and not set(train_idx) & set(test_idx)
    assert np.bincount(labels[test_idx]).tolist() == [200] * 7
    assert np.array_equal(stratified_split(labels, 0.5, seed=0)[1], test_idx)


def test_the_experiment_ships_its_best_run_with_a_card(folders, tmp_path):
    """finetune writes a results row per run; ship makes the best SRL run (by mAP) the `rsscn7` model, card and
    all."""
    from training.experiment import finetune, table
    from training.results import read_rows
    from training.ship import ship

    out = tmp_path / "runs"
    out.mkdir()
    finetune(str(folders), out, "resnet18", "none", ["srl", "rll"], [0, 1], 1, 0, "cpu", **TINY)
    rows = read_rows(out)
    assert [(r["loss"], r["seed"]) for r in rows] == [("srl", 0), ("rll", 0), ("srl", 1), ("rll", 1)]
    finetune(str(folders), out, "resnet18", "none", ["srl"], [0], 1, 0, "cpu", **TINY)  # done: skipped
    assert len(read_rows(out)) == 4 and "| resnet18:none | srl | 1 | 2 |" in table(out)
    path = ship(rows, "srl", tmp_path / "models")
    best = max((r for r in rows if r["loss"] == "srl"), key=lambda r: r["map"])
    shipped = load_checkpoint(path)
    assert shipped.model_id == load_checkpoint(best["checkpoint"]).model_id  # metadata is not in the id
    assert shipped.metadata["evaluation"]["map"] == best["map"] and "research" in shipped.metadata["data"]["terms"]
    assert path.name == "rsscn7.pt" and "research use only" in shipped.metadata["notes"]
    card = (tmp_path / "models" / "MODEL_CARD.rsscn7.md").read_text()
    assert shipped.model_id in card and "`--model rsscn7`, not the default" in card
    assert f"| **this model** (srl, seed {best['seed']}) | 1 | {100 * best['map']:.2f} |" in card
    assert "| srl, every seed run | 2 |" in card and "| rll | 2 |" in card
    with pytest.raises(SystemExit, match="no finished lrml run"):
        ship(rows, "lrml", tmp_path / "models")


@pytest.fixture
def aerial_polygons(tmp_path):
    """Two polygons over the aerial scene, splitting its 128 px tiles into those west and east of column 512."""
    import geopandas as gpd

    tiling = TilingOptions(tile_size=128)
    with tiling.open(str(AERIAL_3857)) as scene:
        grid = plan_grid(scene, tiling)
    west = shapely.union_all(grid.footprints.wgs84[grid.offsets[:, 1] < 512])
    east = shapely.union_all(grid.footprints.wgs84[grid.offsets[:, 1] >= 512])
    polygons = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame({"land": ["fields", "town"]}, geometry=[west, east], crs=4326).to_file(polygons)
    return polygons, tiling, grid


def test_polygon_tiles_take_their_class_from_the_polygon(aerial_polygons):
    polygons, tiling, grid = aerial_polygons
    data = PolygonTiles(polygons, [str(AERIAL_3857)], "land", tiling)
    assert data.classes == ["fields", "town"] and len(data) == len(grid)
    west = int((grid.offsets[:, 1] < 512).sum())
    assert sorted(np.bincount(data.labels).tolist()) == sorted([west, len(grid) - west])
    assert data.names[0] == f"{AERIAL_3857}:{grid.offsets[0][0]},{grid.offsets[0][1]}"
    image, label = data[0]
    assert image.shape == (3, 128, 128) and image.dtype == torch.uint8 and label in (0, 1)


def test_training_on_polygons_over_the_users_scenes(aerial_polygons, tmp_path):
    """`scenes` in the config: the polygons label the tiles that the engine's tiling cuts from them."""
    polygons, _, grid = aerial_polygons
    config = _config(polygons, tmp_path / "run", "rll", scenes=[str(AERIAL_3857)], class_field="land",
                     tile_size=128, classes_per_batch=2, per_class=4)
    result = train(config)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["train"]) + len(split["test"]) == len(grid) and split["test"][0].startswith(str(AERIAL_3857))
    assert result.retrieval.queries == len(split["test"]) and load_checkpoint(result.checkpoint).config.dim == 16
    with pytest.raises(GeosearchError, match="no field 'class'"):
        train(dataclasses.replace(config, class_field="class"))


def test_training_refuses_unusable_polygon_files(aerial_polygons, tmp_path):
    """Each in one line through `geosearch train`: unreadable, without a CRS, without any area."""
    import geopandas as gpd

    polygons, _, _ = aerial_polygons
    frame = gpd.read_file(polygons)
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        frame.set_crs(None, allow_override=True).to_file(tmp_path / "no_crs.shp")  # no .prj beside it
    frame.assign(geometry=frame.geometry.representative_point()).to_file(tmp_path / "points.gpkg")
    (tmp_path / "broken.gpkg").write_text("not a GeoPackage")
    for name, problem in [("broken.gpkg", "cannot be read as vector data"), ("no_crs.shp", "needs polygons with "
                          "a CRS"), ("points.gpkg", "has no polygon with an area")]:
        config = tmp_path / "run.toml"
        config.write_text(f'dataset = "{tmp_path / name}"\nscenes = ["{AERIAL_3857}"]\nclass_field = "land"\n'
                          f'out = "{tmp_path / "run"}"\n')
        result = run_geosearch("train", "--config", str(config))
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"{tmp_path / name}: {problem}" in result.stderr


def test_class_folders_read_as_uint8(folders):
    data = ClassFolders(folders)
    assert data.classes == sorted(SCENES) and len(data) == 32
    image, label = data[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8 and data.classes[label] == "aerial"


def test_cli_train_and_evaluate(folders, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "{folders}"\nout = "{tmp_path / "run"}"\nbackbone = "resnet18"\nweights = "none"\n'
                      'embedding_dim = 16\ninput_size = 64\nloss = "rll"\nclasses_per_batch = 4\nper_class = 3\n'
                      'epochs = 1\nbatches_per_epoch = 1\nworkers = 0\n')
    trained = run_geosearch("train", "--config", str(config))
    assert trained.returncode == 0, trained.stderr
    assert "mAP" in trained.stdout and (tmp_path / "run" / "model.pt").exists()
    evaluated = run_geosearch("evaluate", str(tmp_path / "run" / "model.pt"), "--dataset", str(folders),
                              "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["queries"] == 32
    bad = run_geosearch("train", "--config", str(tmp_path / "missing.toml"))
    assert bad.returncode == 1 and "cannot read the training config" in bad.stderr
    (tmp_path / "nowhere.toml").write_text(f'dataset = "{tmp_path / "nowhere"}"\nout = "{tmp_path / "run2"}"\n')
    nowhere = run_geosearch("train", "--config", str(tmp_path / "nowhere.toml"))
    assert nowhere.returncode == 1 and len(nowhere.stderr.strip().splitlines()) == 1, nowhere.stderr
    assert f"{tmp_path / 'nowhere'}: not a folder" in nowhere.stderr
    config.write_text(config.read_text() + "validation_fraction = 1.0\n")
    no_training_images = run_geosearch("train", "--config", str(config))
    assert no_training_images.returncode == 1 and "validation_fraction in [0, 1)" in no_training_images.stderr
    config.write_text(config.read_text().replace("validation_fraction = 1.0\n", "").replace('loss = "rll"',
                                                                                           'loss = "hinge"'))
    unknown = run_geosearch("train", "--config", str(config))
    assert unknown.returncode == 1 and "unknown loss 'hinge'" in unknown.stderr and "Traceback" not in unknown.stderr
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "test": ["nowhere/0.png"]}))
    wrong_split = run_geosearch("evaluate", str(tmp_path / "run" / "model.pt"), "--dataset", str(folders),
                                "--split", str(tmp_path / "split.json"))
    assert wrong_split.returncode == 1 and "1 test image(s) are not in" in wrong_split.stderr


@pytest.mark.parametrize(("line", "problem"), HOSTILE_SETTINGS.items())
def test_a_bad_setting_is_one_line_before_any_work(folders, tmp_path, line, problem):
    """Issue 30: wrong types, signs and non-finite numbers in a training config: one line, and nothing written (no
    split.json or state.pt that a corrected config would then be refused by)."""
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "{folders}"\nout = "{tmp_path / "run"}"\nloss = "rll"\n{line}\n')
    result = run_geosearch("train", "--config", str(config))
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {config}: {problem}"), \
        result.stderr
    assert not (tmp_path / "run").exists()


def test_junk_configs_and_outputs_are_one_line(folders, tmp_path):
    junk = tmp_path / "junk.toml"
    junk.write_bytes(bytes(range(128, 256)) * 3)
    (tmp_path / "afile").write_text("a file\n")
    taken = tmp_path / "taken.toml"
    taken.write_text(f'dataset = "{folders}"\nout = "{tmp_path / "afile"}"\n')
    for config, problem in ((junk, "cannot read the training config (Invalid statement"),
                            (taken, f"out '{tmp_path / 'afile'}' is a file; give a folder for the run")):
        result = run_geosearch("train", "--config", str(config))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {config}: {problem}"), \
            result.stderr
    result = run_geosearch("evaluate", "default", "--dataset", str(folders), "--out", str(tmp_path / "no" / "eval"))
    assert result.returncode == 1 and result.stderr.strip() == (
        f"Error: --out {tmp_path / 'no' / 'eval'}: folder {tmp_path / 'no'} does not exist")


def test_a_diverging_run_stops_and_a_non_finite_checkpoint_is_refused(folders, tmp_path):
    """A learning rate finite but far too large: the loss turns NaN and the run stops in one line instead of writing
    a NaN model; a checkpoint whose weights hold NaN (with a hash that matches them) is refused on load."""
    with pytest.raises(GeosearchError, match=r"^the loss became nan at epoch 2, batch 1: training diverged"):
        train(_config(folders, tmp_path / "run", "rll", epochs=2, lr_head=1e30, lr_backbone=1e30))
    assert not (tmp_path / "run" / "model.pt").exists()
    good = train(_config(folders, tmp_path / "good", "rll")).checkpoint
    from geosearch.encoder.checkpoint import Checkpoint, model_id_of, save_checkpoint

    checkpoint = load_checkpoint(good)
    weights = dict(checkpoint.state_dict)
    weights["projection.weight"] = torch.full_like(weights["projection.weight"], float("nan"))
    broken = save_checkpoint(Checkpoint(checkpoint.config, weights, checkpoint.metadata,
                                        model_id_of(checkpoint.config, weights)), tmp_path / "nan.pt")
    result = run_geosearch("index", str(AERIAL_3857), "--model", str(broken), "--store", str(tmp_path / "store"))
    assert result.returncode == 1 and result.stderr.strip() == (
        f"Error: {broken}: 1 of its weight tensors hold NaN or infinite values (first projection.weight): a run "
        "that diverged; it would embed every tile as NaN")
    assert not (tmp_path / "store").exists()

"""Training on places from scenes with no labels (the shipped Landsat 8 crops, which overlap), the views that
differ as archives do, the term that keeps the start's neighbours, learned whitening, and `geosearch train` on
places: resume after kill -9, and one line for each input it cannot use."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import shapely
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224077, LANDSAT8_224078
from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError
from geosearch.grid import GridMode
from geosearch.tiling import TilingOptions, plan_grid
from training.augment import archive_views
from training.datasets import PlaceTiles, class_split
from training.keep import KeepNeighbours
from training.metrics import evaluate_retrieval
from training.whitening import learn_whitening, same_label_pairs, whitened_checkpoint

PAIR = [str(LANDSAT8_224077), str(LANDSAT8_224078)]
TILING = TilingOptions(tile_size=128, nodata=0)  # the crops' Level-1 fill is 0, undeclared


@pytest.fixture(scope="module")
def places():
    return PlaceTiles(PAIR, TILING)


def test_a_place_seen_by_both_scenes_is_a_class_of_its_coregistered_tiles(places):
    grids = {}
    for path in PAIR:
        with TILING.open(path) as scene:
            grids[path] = plan_grid(scene, TILING)
    in_both = set(grids[PAIR[0]].place_ids) & set(grids[PAIR[1]].place_ids) - {None}
    assert set(places.classes) <= in_both and len(places.classes) > 20
    for label in range(len(places.classes)):
        tiles = [places.tiles[i] for i in np.flatnonzero(places.labels == label)]
        assert sorted(t.scene for t in tiles) == sorted(PAIR)
        footprints = [grids[t.scene].footprints.wgs84[[tuple(o) for o in grids[t.scene].offsets.tolist()]
                                                      .index((t.row, t.col))] for t in tiles]
        assert footprints[0].equals_exact(footprints[1], tolerance=1e-6)  # the same ground, pixel for pixel
    first = places[0][0]  # read as indexed: no shift without a transform
    assert first.shape == (3, 128, 128) and first.dtype == torch.uint8
    assert torch.equal(first, places[0][0])


def test_views_shift_and_change_the_tile_as_another_scene_would(places):
    places.transform = archive_views()
    try:
        torch.manual_seed(0)
        views = [places[0][0] for _ in range(6)]
    finally:
        places.transform = None
    clean = places[0][0]
    assert all(v.shape == clean.shape and v.dtype == torch.uint8 for v in views)
    assert all(not torch.equal(v, clean) for v in views) and not torch.equal(views[0], views[1])


def test_places_are_held_out_whole():
    labels = np.repeat(np.arange(50), 2)
    train, test = class_split(labels, 0.2, seed=0)
    assert len(set(labels[test])) == 10 and not set(labels[train]) & set(labels[test])
    assert np.array_equal(test, class_split(labels, 0.2, seed=0)[1])


def test_places_need_two_overlapping_scenes_on_the_aligned_grid():
    with pytest.raises(GeosearchError, match="two or more scenes that overlap, got 1"):
        PlaceTiles([PAIR[0], PAIR[0]], TILING)
    with pytest.raises(GeosearchError, match="no place is seen with valid data by two of the 2 scenes"):
        PlaceTiles([str(LANDSAT7_RGB), str(AERIAL_3857)], TILING)
    with pytest.raises(GeosearchError, match="need the aligned grid"):
        PlaceTiles(PAIR, TilingOptions(tile_size=128, grid=GridMode.SCENE))


def test_keeping_the_starts_neighbours_costs_nothing_for_the_start_itself(places):
    torch.manual_seed(0)
    start, _ = pretrained_encoder("resnet18", None, embedding_dim=16, input_size=64)
    other, _ = pretrained_encoder("resnet18", None, embedding_dim=16, input_size=64)
    keep = KeepNeighbours(start.eval()).train()
    images = torch.stack([places[i][0] for i in range(12)])
    assert not keep.start.training and not any(p.requires_grad for p in keep.start.parameters())
    with torch.no_grad():
        assert float(keep(images, start(images))) == pytest.approx(0, abs=1e-5)
    student = other.train()
    loss = keep(images, student(images))
    loss.backward()
    assert loss.item() > 0.01 and student.projection.weight.grad.abs().sum() > 0


def test_same_label_pairs_keep_label_sets_apart():
    """Places cut at two tile sizes each number their places from 0: place 0 at 64 px is not place 0 at 32 px."""
    pairs = same_label_pairs(np.array([0, 1, 0, 1]), np.array([0, 2, 0]))
    assert sorted(map(tuple, pairs.tolist())) == [(0, 2), (1, 3), (4, 6)]
    assert same_label_pairs(np.array([0, 1])).shape == (0, 2)


def test_learned_whitening_discounts_what_differs_within_a_place():
    """Real pooled features of the crops' places; each place's second view is its first moved along one nuisance
    direction by a random amount, as a change of light would move it. The whitening shrinks that direction far
    below the others, and the twin that it hid comes first far more often."""
    encoder, _ = pretrained_encoder("resnet18", None, embedding_dim=None, input_size=64)
    data = PlaceTiles(PAIR, TilingOptions(tile_size=64, nodata=0))
    with torch.no_grad():
        first = encoder(torch.stack([data[i][0] for i in range(len(data))])).numpy()
    rng = np.random.default_rng(0)
    nuisance = rng.standard_normal(first.shape[1])
    nuisance /= np.linalg.norm(nuisance)
    second = first + rng.normal(0, 0.5, (len(first), 1)) * nuisance
    second /= np.linalg.norm(second, axis=1, keepdims=True)
    labels = np.arange(len(first))
    train, test = labels[: len(labels) // 2], labels[len(labels) // 2:]
    features = np.concatenate([first[train], second[train]])
    projection, bias = learn_whitening(features, same_label_pairs(np.concatenate([train, train])), 64)

    def rank1(a: np.ndarray, b: np.ndarray) -> float:
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        return evaluate_retrieval(unit(a), test, unit(b), test, ks=(1,)).recall_at_hit[1]

    directions = rng.standard_normal((100, len(nuisance)))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    assert np.linalg.norm(projection @ nuisance) < 0.1 * np.median(np.linalg.norm(directions @ projection.T, axis=1))
    before = rank1(first[test], second[test])
    after = rank1(first[test] @ projection.T + bias, second[test] @ projection.T + bias)
    assert after > before + 0.2, (before, after)
    with pytest.raises(GeosearchError, match="needs matching pairs"):
        learn_whitening(features, np.empty((0, 2), dtype=int), 64)
    pairs = same_label_pairs(np.concatenate([train, train]))
    again = learn_whitening(features, pairs, 64)
    assert np.array_equal(projection, again[0]) and np.array_equal(bias, again[1]), "one model for one input"
    # shrunk all the way, the within-place covariance is a multiple of the identity: nothing is whitened away and
    # the projection is the features' principal directions, orthogonal and of one length
    plain, _ = learn_whitening(features, pairs, 64, shrinkage=1.0)
    gram = plain @ plain.T
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(64), atol=1e-3 * gram[0, 0])
    with pytest.raises(GeosearchError, match=r"whitening shrinkage 1\.5: choose 0 to 1"):
        learn_whitening(features, pairs, 64, shrinkage=1.5)


def test_places_cut_at_another_size_keep_off_the_held_out_ground(places):
    """The whitening learns from places at several tile sizes; those that touch ground held out at the training
    size stay out, checked here on the tiles' footprints rather than on pixel offsets."""
    _, held_out = class_split(places.labels, 0.2, seed=0)
    small = PlaceTiles(PAIR, TilingOptions(tile_size=64, nodata=0))
    kept = small.apart_from(places, held_out)
    footprints = {}
    for data in (places, small):
        for path in PAIR:
            with data.tiling.open(path) as scene:
                grid = plan_grid(scene, data.tiling)
            offsets = [tuple(o) for o in grid.offsets.tolist()]
            footprints |= {(data.tiling.tile_size, path, o): grid.footprints.wgs84[i] for i, o in enumerate(offsets)}

    def ground(data: PlaceTiles, index: int):
        tile = data.tiles[index]
        return footprints[(data.tiling.tile_size, tile.scene, (tile.row, tile.col))]

    held_ground = shapely.union_all([ground(places, i) for i in held_out])
    # in degrees, neighbouring footprints overlap by a sliver (straight edges drawn between reprojected corners)
    touching = {small.labels[i] for i in range(len(small))
                if ground(small, i).intersection(held_ground).area > 0.01 * ground(small, i).area}
    assert 0 < len(kept) < len(small) and touching
    assert set(small.labels[kept]) == set(small.labels) - touching


def test_a_whitened_checkpoint_is_an_engine_encoder(places):
    encoder, initial = pretrained_encoder("resnet18", None, embedding_dim=None, input_size=64)
    start = Checkpoint.of(encoder, {"initial_weights": initial})
    rng = np.random.default_rng(0)
    projection = rng.standard_normal((8, 512)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    whitened = whitened_checkpoint(start, projection, bias, {"whitening": {"dim": 8}})
    images = torch.stack([places[i][0] for i in range(4)])
    with torch.no_grad():
        pooled = F.normalize(encoder.pool(encoder.trunk(encoder.preprocess(images))), dim=-1).numpy()
        vectors = whitened.encoder()(images).numpy()
    expected = pooled @ projection.T + bias
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert whitened.config.dim == 8 and whitened.metadata["whitening"] == {"dim": 8}
    with pytest.raises(GeosearchError, match="has a 8-d projection already"):
        whitened_checkpoint(whitened, projection, bias, {})


def _places_config(path, out, **changes) -> None:
    settings = {"kind": '"places"', "scenes": "[" + ", ".join(f'"{p}"' for p in PAIR) + "]", "tile_size": 128,
                "nodata": 0, "backbone": '"resnet18"', "weights": '"none"', "embedding_dim": 16, "input_size": 64,
                "loss": '"srl"', "keep": 0.5, "classes_per_batch": 4, "per_class": 2, "batches_per_epoch": 1,
                "epochs": 12, "test_fraction": 0.2, "workers": 0, "out": f'"{out}"'} | changes
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))


def test_train_on_places_resumes_after_kill_9(tmp_path):
    config, out = tmp_path / "places.toml", tmp_path / "run"
    _places_config(config, out)
    child = subprocess.Popen([sys.executable, "-m", "geosearch", "train", "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, states = time.monotonic() + 120, set()  # the first state is saved before any epoch: wait for a second
    while len(states) < 2 and child.poll() is None and time.monotonic() < deadline:
        if (out / "state.pt").exists():
            states.add((out / "state.pt").stat().st_mtime_ns)
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "finished before it could be killed"
    reached = torch.load(out / "state.pt", weights_only=False)["epoch"]
    assert 1 <= reached < 12
    again = run_geosearch("train", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert f"resumed at epoch {reached} of 12" in again.stdout and "mAP" in again.stdout
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint.metadata["training"]["keep"] == 0.5 and checkpoint.config.dim == 16
    assert "places of 2 scenes" in checkpoint.metadata["training"]["dataset"]


@pytest.mark.parametrize(("changes", "problem"), [
    ({"scenes": f'["{PAIR[0]}"]'}, "places need two or more scenes that overlap, got 1"),
    ({"scenes": f'["{LANDSAT7_RGB}", "{AERIAL_3857}"]'}, "no place is seen with valid data by two of the 2 scenes"),
    ({"classes_per_batch": 40}, "left to train on (8 held out to evaluate), fewer than a P × K batch's 40"),
    ({"scenes": "[]"}, "a places run needs `scenes`"),
    ({"kind": '"tiles"'}, "unknown dataset kind 'tiles'"),
    ({"kind": '"classes"', "dataset": '"folders"', "whiten": 8, "whiten_tile_sizes": "[64]"},
     'whiten_tile_sizes cuts places at other tile sizes; it needs kind = "places"'),
    ({"whiten_shrinkage": 0.25}, "shape the learned whitening; set `whiten` (its output size) too"),
    ({"whiten": 8, "whiten_shrinkage": 1.5}, "whitening shrinkage 1.5: choose 0 to 1"),
    ({"whiten": 8, "whiten_shrinkage": "true"}, "whitening shrinkage True: choose 0 to 1"),
    ({"whiten": 8, "whiten_tile_sizes": "[64, 4]"}, "whiten_tile_sizes [64, 4]: a list of tile sizes, whole pixels"),
    ({"whiten": 8, "whiten_tile_sizes": "32"}, "whiten_tile_sizes 32: a list of tile sizes, whole pixels, 8 or more"),
    ({"tile_size": 0}, "tile_size 0: whole pixels, 8 or more"),
    ({"tile_size": 64.5}, "tile_size 64.5: whole pixels, 8 or more"),
    ({"whiten": 8, "whiten_tile_sizes": "[384]"}, "every place cut at 384 px touches the held-out ground"),
])
def test_train_on_places_refuses_what_it_cannot_use_in_one_line(tmp_path, changes, problem):
    config = tmp_path / "places.toml"
    _places_config(config, tmp_path / "run", **changes)
    result = run_geosearch("train", "--config", str(config))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr


def test_a_places_run_ships_as_the_default_with_the_numbers_measured_on_it(tmp_path):
    """The card takes the quality benchmark's cells made by this very model (by model id), never stale ones."""
    from training.ship import ship_places
    from training.train import TrainConfig, train

    config = tmp_path / "places.toml"
    _places_config(config, tmp_path / "run", epochs=1, keep=0.0, whiten=8, whiten_views=1,
                   whiten_tile_sizes="[64]", whiten_shrinkage=0.1)
    result = train(TrainConfig.from_toml(config))
    trained = load_checkpoint(result.checkpoint)
    learned = trained.metadata["initial_weights"]["whitening"]
    assert trained.config.dim == 8 and learned["views"] == 1 and learned["tile_sizes"] == [64, 128]
    assert learned["items"] > len(json.loads((tmp_path / "run" / "split.json").read_text())["train"])
    quality = tmp_path / "quality.json"
    same = "same-place|default|aligned grid, archive stretch (default)|64"
    quality.write_text(json.dumps({same: {"rank1": 0.987, "model_id": trained.model_id},
                                   "land-cover|default": {"map": 0.5, "model_id": "another-model"}}))
    path = ship_places(config, tmp_path / "models", quality)
    shipped = load_checkpoint(path)
    assert path.name == "default.pt" and shipped.model_id == trained.model_id
    assert "public domain" in shipped.metadata["data"]["terms"] and "redistribute" in shipped.metadata["notes"]
    card = (tmp_path / "models" / "MODEL_CARD.md").read_text()
    assert trained.model_id in card and "learned whitening to 8 dimensions" in card
    assert "places cut at 64 and 128 px" in card and "shrunk 0.1 of the way to the identity" in card
    assert "| `default` | 98.7 | not measured | not measured | not measured |" in card
    assert f"rank 1 for {100 * result.retrieval.recall_at_hit[1]:.1f} %" in card


def test_a_scene_is_known_as_of_the_landsat_pair_by_its_bytes_not_its_name(tmp_path, derive):
    from training.ship import ship_places

    named_alike = derive(LANDSAT8_224078, LANDSAT8_224078.name, window=Window(0, 0, 512, 512))
    config = tmp_path / "places.toml"
    _places_config(config, tmp_path / "run", scenes=f'["{PAIR[0]}", "{named_alike}"]')
    with pytest.raises(GeosearchError, match=f"^{named_alike} is not of the Landsat 8 pair"):
        ship_places(config, tmp_path / "models", tmp_path / "quality.json")
    assert not (tmp_path / "models").exists()


def test_shipping_a_default_from_scenes_whose_terms_the_card_does_not_state_is_refused_in_one_line(tmp_path):
    """The default's card states the Landsat pair's public-domain terms; a run on other scenes must not borrow them."""
    config = tmp_path / "places.toml"
    _places_config(config, tmp_path / "run", scenes=f'["{PAIR[0]}", "{AERIAL_3857}"]')
    result = subprocess.run([sys.executable, "-m", "training.ship", str(config), "--quality", str(tmp_path / "q")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{AERIAL_3857} is not of the Landsat 8 pair" in result.stderr

"""The procedural world of builtin:shapes and its numpy scorer (pure numpy, milliseconds)."""

import numpy as np

from latentwalk import shapes


def test_the_scorer_reads_every_drawn_scene_back():
    rng = np.random.default_rng(0)
    pairs = [(scene, shapes.draw(scene, rng)) for scene in shapes.all_scenes() for _ in range(3)]
    assert all(image.shape == (64, 64, 3) and image.dtype == np.uint8 for _, image in pairs)
    assert shapes.score(pairs) == {"size": 1.0, "colour": 1.0, "shape": 1.0, "background": 1.0, "all": 1.0}


def test_the_scorer_reads_soft_edges_as_the_shape_they_blur():
    """A model's shapes come out blurred and wavy; a 3x3 box blur, twice, must not turn a square
    into a circle (the fill of its box alone would, for one scene in ten)."""
    rng = np.random.default_rng(3)
    pairs = [(scene, _blur(shapes.draw(scene, rng), 2)) for scene in shapes.all_scenes() for _ in range(2)]
    result = shapes.score(pairs)
    assert result["shape"] >= 0.97 and result["all"] >= 0.96, result


def _blur(image: np.ndarray, times: int) -> np.ndarray:
    x = image.astype(np.float32)
    for _ in range(times):
        padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(padded[i : i + x.shape[0], j : j + x.shape[1]] for i in range(3) for j in range(3)) / 9
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_the_scorer_is_not_fooled_by_a_wrong_scene_or_an_empty_one():
    rng = np.random.default_rng(1)
    scene = shapes.Scene("large", "red", "circle", "blue")
    image = shapes.draw(scene, rng)
    for wrong in (shapes.Scene("small", "red", "circle", "blue"), shapes.Scene("large", "yellow", "circle", "blue"),
                  shapes.Scene("large", "red", "square", "blue"), shapes.Scene("large", "red", "circle", "gray")):  # fmt: skip
        result = shapes.score([(wrong, image)])
        assert result["all"] == 0 and sum(result[k] for k in ("size", "colour", "shape", "background")) == 3
    assert shapes.classify(np.full((64, 64, 3), 120, np.uint8)) is None
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert shapes.score([(scene, noise)])["all"] == 0


def test_held_out_captions_are_never_trained_on_yet_every_word_is():
    held, train = shapes.held_out(), shapes.training_scenes()
    assert len(held) == 17 and len(train) == 115 and not set(held) & set(train)
    for attribute in ("size", "colour", "shape", "background"):
        assert {getattr(s, attribute) for s in train} == {getattr(s, attribute) for s in shapes.all_scenes()}
    assert held[0].caption == "a small red circle on a green background"
    assert all(s.colour != s.background for s in shapes.all_scenes())


def test_unknown_words_are_the_ones_no_caption_holds():
    assert shapes.unknown_words(["a large red circle on a blue background", "A Small RED square!"]) == []
    assert shapes.unknown_words(["a big orange circle", "an orange cat", ""]) == ["big", "orange", "an", "cat"]
